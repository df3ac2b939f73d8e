"""A snapshot answers point questions by walking trees, and gives the same answers as the full listing.

Why it matters: warm commands no longer list the whole tree (issue 12), so `exists`, `is_dir`,
`listdir` and `read` must agree exactly with what the full `ls-tree -r` map says, including its
rules that symlinks and submodules are not files and that a dir counts only if a file lies below it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from opsbot.manifests.gitrepo import GitRepo
from tests.repos import make_repo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def odd_repo(tmp_path: Path) -> Path:
    repo = make_repo("per-app-overlays", tmp_path / "r", history=False)
    (repo / "only-links").mkdir()
    os.symlink("../README.md", repo / "only-links" / "readme")
    (repo / "deep" / "er" / "est").mkdir(parents=True)
    (repo / "deep" / "er" / "est" / "x.yaml").write_text("a: 1\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "ünïcode dir").mkdir()
    (repo / "ünïcode dir" / "f.yaml").write_text("b: 2\n")
    _git(repo, "add", "-A")
    head = _git(repo, "rev-parse", "HEAD").strip()
    _git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},submodule")
    _git(repo, "-c", "core.quotepath=off", "commit", "-qm", "odd entries")
    return repo


def _questions(full_blobs: dict[str, str]) -> tuple[list[str], list[str]]:
    dirs = {""}
    for p in full_blobs:
        parts = p.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    paths = [
        *sorted(full_blobs),
        "nope.yaml",
        "only-links/readme",
        "submodule",
        "deep/er",
        "run.sh/x",
        "./run.sh",
    ]
    return paths, [*sorted(dirs), "only-links", "submodule", "nope", "deep/er/est/x.yaml", "deep/", "./deep"]


def test_tree_walk_agrees_with_full_listing(odd_repo: Path) -> None:
    repo = GitRepo(str(odd_repo))
    try:
        full = repo.snapshot("main")
        listing = full.blobs  # forces the full map on this one
        lazy_repo = GitRepo(str(odd_repo))
        lazy = lazy_repo.snapshot("main")
        paths, dirs = _questions(listing)
        assert "run.sh" in listing and "only-links/readme" not in listing and "submodule" not in listing
        for p in paths:
            assert lazy.exists(p) == full.exists(p), p
            assert lazy.blob(p) == full.blob(p), p
        for d in dirs:
            assert lazy.is_dir(d) == full.is_dir(d), d
            assert lazy.listdir(d) == full.listdir(d), d
        assert lazy.read("deep/er/est/x.yaml") == "a: 1\n"
        assert lazy.docs("ünïcode dir/f.yaml") == [{"b": 2}]
        assert lazy._blobs is None  # none of the above listed the whole tree
        with pytest.raises(KeyError):
            lazy.read("only-links/readme")
        lazy_repo.close()
    finally:
        repo.close()
