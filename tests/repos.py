"""Throwaway Git repos built from the sample manifest repos: the one builder every engine test uses.

    repo = make_repo("fleet", tmp_path / "repo")            # opsbot/samples/fleet, 2 commits
    repo = make_repo("helm-values", tmp_path / "r", history=False)   # 1 commit
    repo = make_repo(realworld("gitops-istio"), tmp_path / "r")       # a public repo, 1 commit

Fixture names: ``"fleet"`` is ``opsbot/samples/fleet`` (the kustomize overlays sample that
``opsbot testdrive`` also uses); any other name is ``tests/fixtures/repos/<name>``; a ``Path`` is copied
as it is (e.g. ``realworld(...)``; a Path that is one of the named fixtures gets that fixture's history).

What lands in Git:

* ``git init -b main`` in ``dest``, local ``user.name``/``user.email`` (``opsbot tests`` /
  ``tests@opsbot.invalid``), global and system Git config ignored, fixed commit dates
  (:data:`EPOCH` plus one hour per commit): the same fixture always gives the same SHAs.
* ``history=True`` and the fixture is in :data:`HISTORY`: a first commit ("Import <name> manifests")
  holds the OLDER values below, a second commit (the history message) the values the fixture files
  hold now. Otherwise one commit with the fixture as it is. Exactly these fields have history:

  ==================  ===================================================  ==========  ==========
  fixture             file (field)                                         1st commit  HEAD
  ==================  ===================================================  ==========  ==========
  fleet               overlays/production/kustomization.yaml               "1.4.1"     "1.4.2"
                      (images ghcr.io/acme/frontend newTag)
  fleet               overlays/staging/kustomization.yaml (same field)     1.4.2       1.5.0
  per-app-overlays    ledger/overlays/production/kustomization.yaml        "0.9.3"     "0.9.4"
                      (images ghcr.io/acme/ledger newTag)
  per-app-overlays    payments/base/deployment.yaml (container image;      3.0.2       3.1.0
                      production has no images: so it runs the base tag)
  helm-values         charts/podinfo/values-production.yaml (image.tag)    "6.4.2"     "6.5.0"
  flux-helmrelease    apps/production/podinfo-values.yaml                  "6.3.5"     "6.4.0"
                      (spec.chart.spec.version)
  plain               environments/production/web.yaml (web image tag)     1.7.3       1.8.0
  branch-per-env      branch production: deploy/deployment.yaml            2.0.2       2.0.3
                      (shop image tag)
  ==================  ===================================================  ==========  ==========

  ``cluster-templates``, ``flux-chartref``, ``helm-replica-keys``, ``flux-semver-range``, realworld folders and any other directory: one commit, no history.

* Branch-per-env fixtures (a ``branches/`` folder at the fixture root, i.e. ``branch-per-env``):
  ``main`` holds the fixture root without ``branches/`` (README + ``.opsbot.yaml``); then, in sorted
  order, each ``branches/<b>/`` becomes branch ``<b>``, forked from ``main`` and holding exactly that
  folder's files (one commit, or two where the table says so). ``main`` is checked out at the end.
  So: ``main`` 1 commit, ``dev`` 2, ``staging`` 2, ``production`` 3 (2 without history) counting the
  shared ``main`` commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = ROOT / "tests" / "fixtures" / "repos"
FLEET_DIR = ROOT / "opsbot" / "samples" / "fleet"
REALWORLD_DIR = (ROOT / ".." / "shared" / "fixtures" / "realworld").resolve()
BRANCHES = "branches"

#: First commit time (2024-03-01T09:00:00Z); each further commit is one hour later.
EPOCH = 1_709_283_600
AUTHOR_NAME = "opsbot tests"
AUTHOR_EMAIL = "tests@opsbot.invalid"

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".git")


@dataclass(frozen=True)
class HistoryEdit:
    """One field that changed between the first and the second commit, as exact text.

    ``older`` replaces ``current`` (which must occur exactly once in ``path``) in the first commit.
    ``branch`` is the branch whose files hold ``path`` (branch-per-env), else ``main``.
    """

    path: str
    older: str
    current: str
    branch: str = "main"


@dataclass(frozen=True)
class History:
    message: str
    edits: tuple[HistoryEdit, ...]


HISTORY: Mapping[str, History] = {
    "fleet": History(
        "Release frontend 1.4.2 to production and 1.5.0 to staging",
        (
            HistoryEdit("overlays/production/kustomization.yaml", 'newTag: "1.4.1"', 'newTag: "1.4.2"'),
            HistoryEdit("overlays/staging/kustomization.yaml", "newTag: 1.4.2\n", "newTag: 1.5.0\n"),
        ),
    ),
    "per-app-overlays": History(
        "Release ledger 0.9.4 and payments 3.1.0 to production",
        (
            HistoryEdit(
                "ledger/overlays/production/kustomization.yaml", 'newTag: "0.9.3"', 'newTag: "0.9.4"'
            ),
            HistoryEdit(
                "payments/base/deployment.yaml", "ghcr.io/acme/payments:3.0.2", "ghcr.io/acme/payments:3.1.0"
            ),
        ),
    ),
    "helm-values": History(
        "Deploy podinfo 6.5.0 to production",
        (HistoryEdit("charts/podinfo/values-production.yaml", 'tag: "6.4.2"', 'tag: "6.5.0"'),),
    ),
    "flux-helmrelease": History(
        "Upgrade the podinfo chart to 6.4.0 in production",
        (HistoryEdit("apps/production/podinfo-values.yaml", 'version: "6.3.5"', 'version: "6.4.0"'),),
    ),
    "plain": History(
        "Deploy web 1.8.0 to production",
        (
            HistoryEdit(
                "environments/production/web.yaml", "ghcr.io/acme/web:1.7.3", "ghcr.io/acme/web:1.8.0"
            ),
        ),
    ),
    "branch-per-env": History(
        "Deploy shop 2.0.3 to production",
        (
            HistoryEdit(
                "deploy/deployment.yaml",
                "ghcr.io/acme/shop:2.0.2",
                "ghcr.io/acme/shop:2.0.3",
                branch="production",
            ),
        ),
    ),
}

#: Every named fixture make_repo knows (realworld folders come through :func:`realworld`).
FIXTURES: tuple[str, ...] = (
    "fleet",
    "per-app-overlays",
    "helm-values",
    "flux-helmrelease",
    "plain",
    "branch-per-env",
    "cluster-templates",
    "late-config",
    "envs-components",
    "argo-helm-values",
    "testing-chain",
    "kargo-appset",
    "flux-env-roots",
    "flux-valuesfrom",
    "flux-chartref",
    "helm-replica-keys",
    "flux-semver-range",
)


def fixture_path(name: str) -> Path:
    """The source folder of a named fixture (``fleet`` -> opsbot/samples/fleet)."""
    path = FLEET_DIR if name == "fleet" else FIXTURES_DIR / name
    if not path.is_dir():
        known = ", ".join(FIXTURES)
        raise FileNotFoundError(f"no fixture repo named {name!r} (known: {known}); looked in {path}")
    return path


def realworld(name: str) -> Path | None:
    """``../shared/fixtures/realworld/<name>`` next to the repo root, or None when it is absent."""
    path = REALWORLD_DIR / name
    return path if path.is_dir() else None


def make_repo(fixture: str | Path, dest: Path, *, history: bool = True) -> Path:
    """Copy ``fixture`` into ``dest`` (missing or empty) and commit it; see the module docstring."""
    src, name = _resolve(fixture)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    hist = HISTORY.get(name) if history and name is not None else None
    label = name or src.name
    branches_src = src / BRANCHES
    branched = branches_src.is_dir()

    git = _Git(dest)
    git("init", "-q", "-b", "main")
    git("config", "user.name", AUTHOR_NAME)
    git("config", "user.email", AUTHOR_EMAIL)
    git("config", "commit.gpgsign", "false")
    git("config", "core.autocrlf", "false")

    _copy_tree(src, dest, skip=(BRANCHES,) if branched else ())
    _commit_with_history(git, dest, label, hist, "main")

    if branched:
        for branch_dir in sorted(p for p in branches_src.iterdir() if p.is_dir()):
            branch = branch_dir.name
            git("checkout", "-q", "-b", branch, "main")
            _clear_worktree(dest)
            _copy_tree(branch_dir, dest, skip=())
            _commit_with_history(git, dest, f"{label} ({branch})", hist, branch)
        git("checkout", "-q", "main")
    return dest


def _resolve(fixture: str | Path) -> tuple[Path, str | None]:
    if isinstance(fixture, Path):
        src = fixture.resolve()
        if not src.is_dir():
            raise FileNotFoundError(f"fixture folder {fixture} does not exist")
        for name in FIXTURES:
            if fixture_path(name).resolve() == src:
                return src, name
        return src, None
    return fixture_path(fixture), fixture


def _copy_tree(src: Path, dest: Path, *, skip: Sequence[str]) -> None:
    for entry in sorted(src.iterdir()):
        if entry.name in skip or entry.name in {"__pycache__", ".git", ".pytest_cache"}:
            continue
        target = dest / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=_IGNORED, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)


def _clear_worktree(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _commit_with_history(git: _Git, dest: Path, label: str, hist: History | None, branch: str) -> None:
    edits = [e for e in hist.edits if e.branch == branch] if hist is not None else []
    if not edits:
        git.commit_all(f"Import {label} manifests")
        return
    originals: dict[Path, str] = {}
    for edit in edits:
        path = dest / edit.path
        text = originals.setdefault(path, path.read_text())
        current = path.read_text()
        if text.count(edit.current) != 1:
            raise ValueError(
                f"{edit.path}: expected {edit.current!r} exactly once for the history of {label}"
            )
        path.write_text(current.replace(edit.current, edit.older))
    git.commit_all(f"Import {label} manifests")
    for path, text in originals.items():
        path.write_text(text)
    assert hist is not None
    git.commit_all(hist.message)


class _Git:
    """git in one repo with a private config and a clock that advances one hour per commit."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.commits = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            LC_ALL="C",
        )
        self.env = env

    def __call__(self, *args: str, extra_env: Mapping[str, str] | None = None) -> str:
        env = dict(self.env, **extra_env) if extra_env else self.env
        done = subprocess.run(
            ["git", *args], cwd=self.repo, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {self.repo}: {done.stderr.strip()}")
        return done.stdout

    def commit_all(self, message: str) -> None:
        stamp = f"@{EPOCH + 3600 * self.commits} +0000"
        self.commits += 1
        self("add", "-A")
        self(
            "commit",
            "-q",
            "--no-verify",
            "--allow-empty",
            "-m",
            message,
            extra_env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )


def commit_files(dest: Path, message: str, files: Mapping[str, str | None]) -> str:
    """Write (or, for None, delete) ``files`` in the repo at ``dest`` and commit them; returns the sha.

    For tests whose history is the point (e.g. a config added after the version rolled back to);
    dates continue the fixture clock, one hour per commit.
    """
    git = _Git(Path(dest))
    git.commits = int(git("rev-list", "--count", "HEAD").strip() or 0)
    for rel, text in files.items():
        path = Path(dest) / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git.commit_all(message)
    return git("rev-parse", "HEAD").strip()
