"""The hostile-repo corpus through the real `opsbot` CLI, each case a child process with limits.

Each case is a repo built by the test (see hostile.py) and one CLI call (`plan`, `run`, `check`,
`init`). The child runs with RLIMIT_AS (1 GiB) and RLIMIT_CPU (30 s) set through preexec_fn, so an
alias bomb or a runaway parse fails the case by being killed, not by a timing assertion. Its HOME,
TMPDIR and the repo's parent directory are sentinels: their listings must be the same afterwards
(only the repo's own `.git` may change: opsbot keeps its store there). Every case asserts a clear
refusal (non-zero exit, the expected words, one line, no traceback) or a correct plan, and that the
repo's branches, HEAD and work tree are unchanged.

All children run concurrently from one module fixture (they mostly wait on kubectl and git), so the
corpus costs a few seconds of wall time on a busy machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.security.hostile import BOMB, CONFIG_BOMB, hostile_repo, listing, repo_state

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "opsbot" / "samples" / "fleet"
STAGING = (FLEET / "overlays/staging/kustomization.yaml").read_text()
FRONTEND = (FLEET / "apps/frontend/kustomization.yaml").read_text()
EVIL_DEPLOYMENT = (
    'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: "ev\\e[31mil"\n'
    "spec:\n  template:\n    spec:\n      containers: [{name: a, image: x}]\n"
)
MEMORY_LIMIT = 1 << 30
CPU_SECONDS = 30


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


@dataclass
class Case:
    id: str
    argv: list[str]
    refused: bool = True
    expect: tuple[str, ...] = ()
    files: dict[str, str | bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # "{outside}" / "{home}" are filled in
    base: str | None = "fleet"
    remove: tuple[str, ...] = ()
    #: a work-tree change made after the commit (e.g. a symlink that is not committed)
    after: Callable[[Path, Path], None] | None = None


def _staging_with(ref: str) -> str:
    return STAGING.replace("resources:\n", f"resources:\n- {ref}\n")


def _cfg(text: str) -> dict[str, str | bytes]:
    return {".opsbot.yaml": text}


def _link_config_to_home(repo: Path, home: Path) -> None:
    (repo / ".opsbot.yaml").unlink(missing_ok=True)
    os.symlink(home / ".gitconfig", repo / ".opsbot.yaml")


SCALE = "scale frontend 3 in staging"
CASES = [
    # a correct plan: the harness itself sees a clean run as clean
    Case("control-plan", ["plan", SCALE], refused=False, expect=("replicas 2 → 3",)),
    # 1. traversal in every path-bearing config key, template names, kustomize references, symlinks
    Case("env-path-traversal", ["plan", SCALE], expect=("environments.staging.path", "leaves the repository"),
         files=_cfg("environments:\n  staging: {path: ../../../etc}\n")),
    Case("env-path-absolute", ["run", SCALE], expect=("environments.staging.path", "absolute"),
         files=_cfg("environments:\n  staging: {paths: [overlays/staging, /etc]}\n")),
    Case("clusters-path-traversal", ["run", "create cluster c1"], expect=("clusters.path", "leaves the repository"),
         files=_cfg("clusters: {path: '../../../../tmp/x/{name}/..'}\n")),
    Case("clusters-templates-traversal", ["check"], expect=("clusters.templates",),
         files=_cfg("clusters: {templates: ../../..}\n")),
    Case("template-name-dotdot", ["plan", "create cluster c1 from .."], expect=("not a template name",)),
    Case("template-name-dot", ["run", "create cluster c1 from ."], expect=("not a template name",)),
    Case("kustomize-ref-absolute", ["plan", SCALE], expect=("overlays/staging/kustomization.yaml", "absolute"),
         files={"overlays/staging/kustomization.yaml": _staging_with("/etc")}),
    Case("generator-reads-proc", ["plan", SCALE], expect=("/proc/self/environ", "absolute"),
         files={"overlays/staging/kustomization.yaml": STAGING + "configMapGenerator:\n- name: e\n  envs: [/proc/self/environ]\n"}),
    Case("kustomize-ref-climbs-out", ["check"], expect=("points outside the repository",),
         files={"overlays/staging/kustomization.yaml": _staging_with("../../../../../../../../tmp")}),
    Case("symlinked-clusters-dir", ["run", "create cluster c1"], expect=("clusters is a symbolic link",),
         links={"clusters": "{outside}"}, base="cluster-templates", remove=("clusters",)),
    Case("symlinked-env-dir", ["plan", SCALE], expect=("evil is a symbolic link",),
         links={"evil": "{outside}"}, files=_cfg("environments:\n  staging: {path: evil}\n")),
    Case("symlink-manifest-out", ["plan", SCALE], refused=False, expect=("replicas 2 → 3",),
         links={"apps/frontend/stolen.yaml": "{home}/.gitconfig"}),
    Case("init-through-symlink", ["init", "--force"], expect=("symbolic link",), after=_link_config_to_home),
    # 3. alias bombs, sizes, NUL and control characters in repo files
    Case("alias-bomb-config", ["plan", "status"], expect=(".opsbot.yaml", "alias"),
         files=_cfg(CONFIG_BOMB)),
    Case("alias-bomb-flux-plan", ["plan", SCALE], expect=("clusters/staging/bomb.yaml", "alias"),
         files={"clusters/staging/bomb.yaml": BOMB + "\n"}),
    Case("alias-bomb-flux-init", ["init"], expect=("clusters/staging/bomb.yaml", "alias"),
         files={"clusters/staging/bomb.yaml": BOMB + "\n"}),
    Case("alias-bomb-flux-check", ["check"], expect=("clusters/staging/bomb.yaml", "alias"),
         files={"clusters/staging/bomb.yaml": BOMB + "\n"}),
    Case("oversize-file", ["plan", SCALE], expect=("clusters/staging/big.yaml", "bytes"),
         files={"clusters/staging/big.yaml": "kind: Kustomization\nx: " + "y" * (9 << 20) + "\n"}),
    Case("nul-in-config", ["plan", SCALE], expect=(".opsbot.yaml",),
         files=_cfg("environments:\n  staging: {path: overlays/staging}\n\0\n")),
    Case("control-char-in-config-path", ["plan", SCALE], expect=("control character",),
         files=_cfg('environments:\n  staging: {path: "overlays/\\x1bstaging"}\n')),
    # 4. remote references
    Case("remote-base-plan", ["plan", SCALE], expect=("github.com/acme/infra//base?ref=v1", "allow_remote"),
         files={"overlays/staging/kustomization.yaml": _staging_with("github.com/acme/infra//base?ref=v1")}),
    Case("remote-resource-check", ["check"], expect=("https://example.com/x.yaml", "allow_remote"),
         files={"overlays/staging/kustomization.yaml": _staging_with("https://example.com/x.yaml")}),
    Case("remote-component-run", ["run", SCALE], expect=("apps/frontend/kustomization.yaml", "git::"),
         files={"apps/frontend/kustomization.yaml": FRONTEND + "components:\n- git::https://example.com/c.git//x\n"}),
    # 6./7. odd template values, digits, confusables, control characters in commands
    Case("template-flow-mapping", ["plan", 'create cluster c1 kubernetes_version={"evil":true}'],
         expect=("kubernetes_version=",), base="cluster-templates"),
    Case("template-tag", ["plan", "create cluster c1 kubernetes_version=!foo"], expect=("kubernetes_version=",),
         base="cluster-templates"),
    Case("template-alias", ["run", "create cluster c1 kubernetes_version=*x"], expect=("kubernetes_version=",),
         base="cluster-templates"),
    Case("template-quote", ["plan", 'create cluster c1 namespace=a"b'], expect=("namespace 'a\"b'", "DNS-1123"),
         base="cluster-templates"),
    Case("template-plain-value", ["plan", "create cluster c1 namespace=team-a"], refused=False,
         expect=("Create cluster c1", "✅ names"), base="cluster-templates"),
    Case("superscript-digit", ["plan", "scale frontend ² in staging"], expect=("whole number",)),
    Case("superscript-range", ["run", "scale frontend ³-5 in staging"], expect=("whole number",)),
    Case("circled-digit", ["plan", "scale frontend ① in staging"], expect=("whole number",)),
    Case("fullwidth-digit", ["plan", "scale frontend ３ in staging"], expect=("whole number",)),
    Case("confusable-app", ["plan", "scale frontеnd 3 in staging"], expect=("not a valid app name",)),
    Case("control-char-env-folder", ["plan", "scale frontend 3 in prod"], expect=("Unknown environment",),
         files={"overlays/\x1b[31mevil/kustomization.yaml": STAGING}),
    Case("escape-in-app-name", ["check"], refused=False, expect=("ev\\x1b[31mil",),
         files={"apps/frontend/evil.yaml": EVIL_DEPLOYMENT,
                "apps/frontend/kustomization.yaml": FRONTEND.replace("resources:\n", "resources:\n- evil.yaml\n")}),
    Case("control-char-command", ["plan", "scale frontend\x1b[2J 3 in staging"], expect=("control or invisible character (U+001B)",)),
    # 7. config errors reach the user; issue 11 item 2: nothing discovered
    Case("unknown-config-key", ["run", SCALE], expect=("aprovals",),
         files=_cfg("aprovals: 1\nenvironments:\n  staging: {path: overlays/staging}\n")),
    Case("nothing-discovered-plan", ["plan", SCALE], expect=("opsbot init", "docs/configuration.md"),
         files={"README.md": "empty\n"}, base=None),
    Case("nothing-discovered-run", ["run", "--json", SCALE], expect=("opsbot init",),
         files={"README.md": "empty\n"}, base=None),
]


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    before: tuple[object, ...]
    after: tuple[object, ...]


def _run_case(case: Case, base_dir: Path) -> Outcome:
    parent, home, tmp, outside = (base_dir / n for n in ("parent", "home", "tmp", "outside"))
    for d in (parent, home, tmp, outside):
        d.mkdir(parents=True)
    (home / ".gitconfig").write_text("[user]\n\tname = sentinel\n")
    links = {k: v.format(outside=outside, home=home) for k, v in case.links.items()}
    repo = hostile_repo(parent / "repo", case.files, links, base=case.base, remove=case.remove)
    if case.after is not None:
        case.after(repo, home)
    snapshot = (repo_state(repo), listing(parent, skip=repo / ".git"), listing(home), listing(outside), listing(tmp))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LC_ALL": "C.UTF-8",
        "OPSBOT_USER": "mallory",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONPATH": str(ROOT),  # the child runs this checkout's opsbot, whatever is installed
    }
    argv = [*case.argv[:1], "--repo", str(repo), *case.argv[1:]]
    proc = subprocess.run(
        [sys.executable, "-m", "opsbot", *argv],
        cwd=parent,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_limits,
        check=False,
        timeout=300,
    )
    after = (repo_state(repo), listing(parent, skip=repo / ".git"), listing(home), listing(outside), listing(tmp))
    return Outcome(proc.returncode, proc.stdout, proc.stderr, snapshot, after)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("hostile")
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {c.id: pool.submit(_run_case, c, base / c.id) for c in CASES}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[case.id]
    both = o.out + o.err
    assert "Traceback" not in both and "Something went wrong" not in both, both
    assert "\x1b" not in both, "a terminal escape from the repo reached the output"
    for want in case.expect:
        assert want in both, f"{want!r} not in: {both}"
    if case.refused:
        assert o.code != 0, both
        if "--json" in case.argv:
            assert o.out.strip() or o.err.strip(), "a refusal under --json must still say something"
        elif case.argv[0] != "check":  # check reports per env on stdout; the rest is one line
            lines = [ln for ln in o.err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("opsbot: "), both
    else:
        assert o.code == 0, both
    repo_before, parent_before, home_before, outside_before, tmp_before = o.before
    repo_after, parent_after, home_after, outside_after, tmp_after = o.after
    assert repo_after == repo_before, "the repo's branches, HEAD or work tree changed"
    assert parent_after == parent_before, "something was written beside the repo"
    assert home_after == home_before, "something was written in HOME"
    assert outside_after == outside_before, "something was written through a symlink"
    assert tmp_after == tmp_before, "opsbot left files in its temp dir"
