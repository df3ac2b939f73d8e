"""Hostile manifest repos, built by the tests: no evil file is checked in.

`hostile_repo(dest, files=..., links=...)` copies a base fixture (the sample fleet by default, or
nothing), adds the given files and symlinks, and commits everything on `main` with a private Git
config, so each case is one real repo whose only oddity is what the case put in.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.repos import make_repo

#: 871-byte-class alias bomb: nine levels of ten aliases, 10^9 leaves when walked.
BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
)

#: The bomb where `.opsbot.yaml` reads a value and calls `str()` on it (`helm.tag`), as in issue 9.
CONFIG_BOMB = "helm:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()) + "  tag: *a8\n"


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return env


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=git_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def hostile_repo(
    dest: Path,
    files: Mapping[str, str | bytes] | None = None,
    links: Mapping[str, str] | None = None,
    *,
    base: str | None = "fleet",
    remove: tuple[str, ...] = (),
) -> Path:
    """`base` fixture + `files` + symlinks `links` (path -> target), committed on main."""
    if base:
        make_repo(base, dest, history=False)
    else:
        dest.mkdir(parents=True)
        git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "opsbot tests")
    git(dest, "config", "user.email", "tests@opsbot.invalid")
    for rel in remove:
        git(dest, "rm", "-q", "-r", rel)
    for rel, content in (files or {}).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for rel, to in (links or {}).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(to, target)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "--no-verify", "--allow-empty", "-m", "hostile case")
    return dest


def repo_state(repo: Path) -> tuple[str, str, str]:
    """Branches and tags with their commits, HEAD, and the work tree's status: all must stay as they were."""
    return (
        git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all"),
    )


def listing(root: Path, skip: Path | None = None) -> dict[str, int]:
    """Every path under `root` (symlinks not followed) and its size, except inside `skip`."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = here / name
            out[str(p.relative_to(root))] = p.lstat().st_size if not p.is_dir() or p.is_symlink() else -1
    return out
