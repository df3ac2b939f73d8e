"""opsbot's caches in the repo's git dir cannot run code or change a plan (issue 9 item 2).

Each case plants a file where a cache lives (or used to live), runs `opsbot plan` as a real child
process, and checks that nothing the file asked for happened (a sentinel a pickle would create stays
absent) and that the plan equals the plan of an untouched copy of the same repo (same commit SHAs).
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opsbot.manifests.cachedb import CacheDB, exact_json
from tests.repos import make_repo

COMMAND = "scale frontend 5 in production"


def plan(repo: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "opsbot", "plan", COMMAND, "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


class _Plant:
    """Unpickling this creates `path`: the proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (str(self.path), "w"))


@pytest.fixture
def expected(tmp_path: Path) -> dict[str, Any]:
    """The plan of an untouched copy of the fleet, with no cache files at all."""
    return plan(make_repo("fleet", tmp_path / "clean"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo("fleet", tmp_path / "fleet")


def _cache_dir(repo: Path) -> Path:
    d = repo / ".git" / "opsbot"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_planted_pickles_at_every_cache_path_never_run(
    repo: Path, tmp_path: Path, expected: dict[str, Any]
) -> None:
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(_Plant(sentinel))
    d = _cache_dir(repo)
    for name in ("doc-cache.pickle", f"index-{head(repo)}.pickle", "cache.sqlite3"):
        (d / name).write_bytes(payload)
    assert plan(repo) == expected
    assert not sentinel.exists()
    # and the second, warm run (served from the rebuilt cache) is the same plan
    assert plan(repo) == expected
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\x00\xff" * 100, b"SQLite format 3\x00" + b"\x00" * 200],
    ids=["empty", "garbage", "truncated-sqlite"],
)
def test_corrupt_cache_file_is_ignored(repo: Path, expected: dict[str, Any], content: bytes) -> None:
    (_cache_dir(repo) / "cache.sqlite3").write_bytes(content)
    assert plan(repo) == expected
    assert plan(repo) == expected


def _poison_rows(db: sqlite3.Connection, repo: Path) -> None:
    """Rows shaped like ours, claiming every blob of the repo parses to a 99-replica Deployment."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    evil = json.dumps([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "frontend"}}])
    db.execute("CREATE TABLE docs (blob TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE facts (commit_id TEXT, kind TEXT, key TEXT, value TEXT, PRIMARY KEY (commit_id, kind, key))"
    )
    db.execute("CREATE TABLE commits (commit_id TEXT PRIMARY KEY, used REAL)")
    for line in listing.splitlines():
        db.execute("INSERT INTO docs VALUES (?, ?)", (line.split()[2], evil))
    db.execute("INSERT INTO commits VALUES (?, 0)", (head(repo),))
    db.commit()


def test_foreign_sqlite_file_is_not_trusted(repo: Path, expected: dict[str, Any]) -> None:
    """Another program's database with our table names (but not our application id) is replaced."""
    path = _cache_dir(repo) / "cache.sqlite3"
    db = sqlite3.connect(path)
    _poison_rows(db, repo)
    db.close()
    assert plan(repo) == expected
    assert plan(repo) == expected


def test_older_schema_of_ours_is_not_trusted(repo: Path, expected: dict[str, Any]) -> None:
    path = _cache_dir(repo) / "cache.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id=1869640546")  # ours, 0x6F707362
    db.execute("PRAGMA user_version=999")
    _poison_rows(db, repo)
    db.close()
    assert plan(repo) == expected


def test_symlinked_cache_file_is_not_followed(repo: Path, tmp_path: Path, expected: dict[str, Any]) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not opsbot's\n")
    (_cache_dir(repo) / "cache.sqlite3").symlink_to(outside)
    assert plan(repo) == expected
    assert outside.read_text() == "not opsbot's\n"


def test_warm_run_reads_its_own_cache(repo: Path, expected: dict[str, Any]) -> None:
    """The cache is really used: after one plan it holds parsed documents and the commit's index."""
    assert plan(repo) == expected
    db = sqlite3.connect(_cache_dir(repo) / "cache.sqlite3")
    try:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x6F707362
        assert db.execute("SELECT count(*) FROM docs").fetchone()[0] > 0
        assert db.execute("SELECT commit_id FROM commits").fetchall() == [(head(repo),)]
    finally:
        db.close()
    assert plan(repo) == expected


def test_only_values_that_survive_json_exactly_are_cached(tmp_path: Path) -> None:
    import datetime

    assert exact_json([{"a": 1, "b": [1.5, True, None, "x"]}]) is not None
    assert exact_json([{"when": datetime.date(2024, 3, 1)}]) is None  # YAML 1.1 timestamp
    assert exact_json([{1: "int key"}]) is None  # json.dumps would turn it into "1"
    assert exact_json([{"blob": b"\x00"}]) is None  # !!binary
    assert exact_json([{"x": float("nan")}]) is None
    db = CacheDB(tmp_path / "c.sqlite3")
    db.put_docs([("a" * 40, [{"when": datetime.date(2024, 3, 1)}]), ("b" * 40, [{"n": 1}])])
    assert db.get_docs(["a" * 40, "b" * 40]) == {"b" * 40: [{"n": 1}]}
    db.close()
