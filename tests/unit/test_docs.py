"""The docs say what the code does.

- Every `opsbot ...` command shown in a shell block of README.md or docs/*.md is run here, in the
  order the page shows it, on a sandbox copy of the sample fleet repo — or is in ALLOWLIST with the
  test that covers it (kept small: an entry no page uses any more fails too).
- Every setting is in docs/settings.md; every `.opsbot.yaml` key the parser reads is in
  docs/configuration.md; the YAML examples of those pages load with the real parsers.
- The error messages quoted in docs/troubleshooting.md exist in the code, and the repo paths and
  links of the pages written for this exist.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from opsbot import cli
from opsbot.manifests import config as repo_config
from opsbot.manifests.config import parse_config
from opsbot.policy import rules as policy_rules
from opsbot.settings import ENV_VARS, Settings, load_settings
from tests.repos import make_repo

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: The pages this test holds to the stricter checks (paths, links, YAML examples).
OWN_PAGES = [
    DOCS / n
    for n in ("install.md", "configuration.md", "settings.md", "rbac.md", "troubleshooting.md", "policies.md")
]
SHELL_LANGS = {"sh", "bash", "shell", "console"}
#: Subcommands that can run on a sandbox repo with no credentials.
RUNNABLE = {"plan", "run", "check", "init", "prs", "merge", "testdrive", "audit"}

#: Command lines (as shown, `--repo` value included) not run here, and the test that covers each.
ALLOWLIST: dict[str, str] = {
    # A long-running server: started, probed and stopped with SIGTERM by this test.
    "opsbot serve": (
        "tests/unit/test_container.py::test_the_image_command_starts_serves_health_logs_json_and_stops_on_sigterm"
    ),
    # README: merges the PR of the `run` before it, which on the sample fleet has nothing to change
    # (api is already at staging's version); the merge of an opened PR is covered here:
    "opsbot merge R1 --repo PATH": (
        "tests/integration/test_cli.py::test_run_opens_a_pr_branch_with_one_commit_then_merge"
    ),
}

#: Pages other people are writing; links to them are checked once they exist.
PENDING_PAGES = {"docs/gitops.md"}


# --------------------------------------------------------------------------------------------- extraction


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [
        (m.group(1).lower(), m.group(2))
        for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S)
    ]


def opsbot_commands(block: str) -> list[list[str]]:
    """The `opsbot` invocations in a shell block: continuations joined, prompts and comments dropped,
    split at `&&`, `||`, `;` and `|`."""
    out: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        tokens = shlex.split(line, comments=True)
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token in ("&&", "||", ";", "|"):
                while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
                    segment.pop(0)  # VAR=value before the command
                if segment and Path(segment[0]).name == "opsbot":
                    out.append(["opsbot", *segment[1:]])
                segment = []
            else:
                segment.append(token)
    return out


def documented_commands() -> dict[Path, list[list[str]]]:
    found: dict[Path, list[list[str]]] = {}
    for page in PAGES:
        cmds = [
            c
            for lang, body in fenced_blocks(page.read_text())
            if lang in SHELL_LANGS
            for c in opsbot_commands(body)
        ]
        if cmds:
            found[page] = cmds
    return found


def test_extraction_sees_commands_the_way_a_shell_would() -> None:
    block = (
        "$ python3 -m venv .venv && .venv/bin/opsbot testdrive\n"
        'OPSBOT_USER=bob opsbot run "scale web 2 in dev" \\\n  --repo PATH   # a comment\n'
        '# opsbot plan "not this"\n'
        "kubectl get pods | opsbot-like --no\n"
    )
    assert opsbot_commands(block) == [
        ["opsbot", "testdrive"],
        ["opsbot", "run", "scale web 2 in dev", "--repo", "PATH"],
    ]


# --------------------------------------------------------------------------------------------- (a) commands


def _prepare(argv: list[str], sandbox: Path, scratch: Path) -> list[str]:
    args = list(argv[1:])
    if "--repo" in args:
        args[args.index("--repo") + 1] = str(sandbox)
    if args[0] == "testdrive":
        if "--no-input" not in args:
            args.append("--no-input")
        if "--dir" not in args:
            args += ["--dir", str(scratch / "testdrive" / "fleet")]
    return args


def test_every_documented_command_is_run_or_allowlisted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    for var in [v for v in os.environ if v.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("OPSBOT_USER", "alice")
    commands = documented_commands()
    assert ROOT / "README.md" in commands  # the extraction found the README's own examples
    problems: list[str] = []
    ran = 0
    for page, cmds in commands.items():
        name = page.relative_to(ROOT).as_posix()
        sandbox = make_repo("fleet", tmp_path / name.replace("/", "_") / "fleet")
        monkeypatch.chdir(sandbox)
        for argv in cmds:
            shown = shlex.join(argv)
            if shown in ALLOWLIST:
                continue
            sub = next((a for a in argv[1:] if not a.startswith("-")), "")
            if sub not in RUNNABLE or "--settings" in argv:
                problems.append(f"{name}: `{shown}` is neither runnable here nor in ALLOWLIST")
                continue
            code = cli.main(_prepare(argv, sandbox, tmp_path / name.replace("/", "_")))
            err = capsys.readouterr().err
            ran += 1
            if code != 0:
                problems.append(f"{name}: `{shown}` exited {code}: {err.strip()[-500:]}")
    assert problems == []
    assert ran >= 10


def test_the_allowlist_is_small_used_and_points_at_real_tests() -> None:
    assert len(ALLOWLIST) <= 5
    shown = {shlex.join(c) for cmds in documented_commands().values() for c in cmds}
    for line, test in ALLOWLIST.items():
        assert line in shown, f"ALLOWLIST entry no page shows any more: {line}"
        path, _, func = test.partition("::")
        assert re.search(rf"^(async )?def {func}\(", (ROOT / path).read_text(), re.M), test


# --------------------------------------------------------------------------------------------- (b) settings


def test_every_setting_is_in_settings_md() -> None:
    text = (DOCS / "settings.md").read_text()
    missing = [var for var in ENV_VARS if f"`{var}`" not in text]
    file_only = [f.name for f in fields(Settings) if f.name not in ENV_VARS.values()]
    assert set(file_only) >= {"rbac", "env_channels"}
    missing += [name for name in file_only if f"`{name}`" not in text]
    assert missing == []


def test_settings_md_documents_no_variable_that_does_not_exist() -> None:
    """The other direction: a documented variable is a setting, or one the code or image really
    reads or sets (the "Variables outside Settings" table)."""
    text = (DOCS / "settings.md").read_text()
    documented = {
        name
        for cell in re.findall(r"^\|([^|]*)\|", text, re.M)
        for name in re.findall(r"`([A-Z][A-Z0-9_]{2,})`", cell)
    }
    outside = documented - set(ENV_VARS)
    assert outside, "the table of variables outside Settings is missing"
    used = _source_text() + (ROOT / "Dockerfile").read_text()
    used += "".join(p.read_text() for p in (ROOT / "deploy").rglob("*.yaml"))
    assert sorted(n for n in outside if not re.search(rf"\b{n}\b", used)) == []


# --------------------------------------------------------------------------------------------- (c) .opsbot.yaml


#: (module, functions) that read `.opsbot.yaml` keys: the config parser, and the policy keys.
PARSERS = ((repo_config, ("parse_config", "_helm_keys", "_agent")), (policy_rules, ("parse_window", "parse_gate")))


def parser_keys() -> set[str]:
    """Every key the `.opsbot.yaml` parser reads: `X.get("key")` and `X["key"]` in its functions,
    plus the allowed-key sets. Read from the source, so a new key cannot slip by undocumented."""
    keys = set(repo_config._TOP_KEYS) | set(repo_config._ENV_KEYS)
    for module, names in PARSERS:
        keys |= _keys_read(Path(module.__file__ or "").read_text(), names)
    return keys


def policy_keys() -> set[str]:
    return _keys_read(Path(policy_rules.__file__ or "").read_text(), ("parse_window", "parse_gate"))


def _keys_read(source: str, names: tuple[str, ...]) -> set[str]:
    tree = ast.parse(source)
    keys: set[str] = set()
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in names:
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    keys.add(node.args[0].value)
                elif (
                    isinstance(node, ast.Subscript)
                    and isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str)
                ):
                    keys.add(node.slice.value)
    return keys


def test_every_opsbot_yaml_key_is_in_configuration_md() -> None:
    keys = parser_keys()
    assert {"environments", "promote_from", "workload", "templates", "object", "replicas", "tag"} <= keys
    text = (DOCS / "configuration.md").read_text() + (DOCS / "policies.md").read_text()
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert missing == []


def test_every_policy_key_is_in_policies_md() -> None:
    keys = policy_keys()
    assert {"kind", "schedule", "duration", "timezone", "reason", "name", "prometheus", "for"} <= keys
    text = (DOCS / "policies.md").read_text()
    assert sorted(k for k in keys | {"windows", "gates", "auto_revert"} if f"`{k}`" not in text) == []


def _yaml_examples(page: Path) -> list[str]:
    return [body for lang, body in fenced_blocks(page.read_text()) if lang in ("yaml", "yml")]


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda p: p.name)
def test_yaml_examples_load_with_the_real_parsers(page: Path, tmp_path: Path) -> None:
    settings_keys = {f.name for f in fields(Settings)}
    checked = 0
    for n, body in enumerate(_yaml_examples(page)):
        data = yaml.safe_load(body)
        assert isinstance(data, dict), f"{page.name} example {n} is not a mapping"
        if set(data) <= set(repo_config._TOP_KEYS):
            parse_config(body)
            checked += 1
        elif set(data) <= settings_keys:
            (tmp_path / f"{n}.yaml").write_text(body)
            load_settings(environ={}, file=str(tmp_path / f"{n}.yaml"))
            checked += 1
    if page.name in ("configuration.md", "settings.md", "rbac.md"):
        assert checked >= 1


# --------------------------------------------------------------------------------------------- (d) messages


def _source_text() -> str:
    text = "\n".join(p.read_text() for d in ("opsbot", "commands") for p in sorted((ROOT / d).rglob("*.py")))
    # Join implicitly concatenated string literals split over lines: "a "\n    f"b" -> "a b".
    return re.sub(r"\"\s*\n\s*f?\"", "", text)


def test_troubleshooting_quotes_messages_the_code_really_writes() -> None:
    headings = re.findall(r"^### `(.+)`$", (DOCS / "troubleshooting.md").read_text(), re.M)
    assert len(headings) >= 25
    source = _source_text()
    missing = []
    for heading in headings:
        for fragment in re.split(r"<[^>]+>", heading):
            fragment = fragment.strip()
            if len(fragment) >= 4 and fragment not in source:
                missing.append(f"{heading!r}: {fragment!r}")
    assert missing == []


# --------------------------------------------------------------------------------------------- paths + links


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda p: p.name)
def test_paths_and_links_exist(page: Path) -> None:
    text = page.read_text()
    broken = []
    for path in re.findall(r"`((?:deploy|docs|opsbot|tests)/[A-Za-z0-9_./-]*)`", text):
        if not (ROOT / path).exists():
            broken.append(path)
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        target = (page.parent / link).resolve()
        rel = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        if not target.exists() and rel not in PENDING_PAGES:
            broken.append(link)
    assert broken == []
