"""opsbot's speed-up caches for one manifest repo: one SQLite file of JSON rows in the repo's git dir.

Why SQLite + JSON and not pickle: the git dir is writable by whoever can write the repo's host
directory, and a pickle there runs code on the next `plan` (issue 9). Neither SQLite nor JSON can
execute anything. Why it is checked: a file at this path that is not ours (garbage, another program's
SQLite database, an older schema) is never trusted; it is replaced by an empty cache, so a planted or
corrupt file can cost speed but never change a plan. Values are stored only when they survive the
JSON round trip exactly (YAML also yields dates, bytes and non-string keys), so a cache hit returns
the same data a parse would. Every failure here degrades to "no cache".
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: PRAGMA application_id of our file ("opsb"); anything else at the path is foreign.
APPLICATION_ID = 0x6F707362
#: PRAGMA user_version: the row layout below. Bump it when that changes; old files are replaced.
SCHEMA_VERSION = 1

_SCHEMA = (
    # parsed YAML documents by blob id (content-addressed: right across commits)
    "CREATE TABLE IF NOT EXISTS docs (blob TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # per-commit facts (the repo config, kustomize graph rows) by commit id, kind and key
    "CREATE TABLE IF NOT EXISTS facts (commit_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,"
    " value TEXT NOT NULL, PRIMARY KEY (commit_id, kind, key))",
    # which commits have complete facts, newest use last (for pruning)
    "CREATE TABLE IF NOT EXISTS commits (commit_id TEXT PRIMARY KEY, used REAL NOT NULL)",
)


def exact_json(value: Any) -> str | None:
    """JSON text for `value` if loading it gives back an equal value of the same types, else None."""
    if not _plain(value):
        return None
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    return False
                stack.append(item)
        elif t is list:
            stack.extend(v)
        elif t not in (str, int, float, bool) and v is not None:
            return False
    return True


class CacheDB:
    """The cache file; opened lazily, thread-safe, and a no-op when it cannot be used."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._opened = path is None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ opening
    def _connection(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = True
            try:
                self._conn = self._open()
            except (OSError, sqlite3.Error):
                self._conn = None
        return self._conn

    def _open(self) -> sqlite3.Connection | None:
        assert self.path is not None
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        if parent.is_symlink():
            return None  # never follow a planted link out of the git dir
        if self.path.is_symlink():
            self._discard()
        conn = self._connect_ours()
        if conn is None:  # garbage, another program's database, or another schema: start afresh
            self._discard()
            conn = self._connect_ours()
        return conn

    def _connect_ours(self) -> sqlite3.Connection | None:
        """A connection to our file (created empty if absent), or None if the file there is not ours."""
        assert self.path is not None
        conn = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False, isolation_level=None)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                conn.execute("BEGIN IMMEDIATE")
                if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                    for stmt in _SCHEMA:
                        conn.execute(stmt)
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if (
                app_id != APPLICATION_ID
                or version != SCHEMA_VERSION
                or not {"docs", "facts", "commits"} <= tables
            ):
                conn.close()
                return None
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        except sqlite3.DatabaseError:
            conn.close()
            return None

    def _discard(self) -> None:
        assert self.path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    # ------------------------------------------------------------------------------------ docs
    def get_doc(self, blob: str) -> list[Any] | None:
        rows = self.get_docs([blob])
        return rows.get(blob)

    def get_docs(self, blobs: Iterable[str]) -> dict[str, list[Any]]:
        wanted = list(blobs)
        out: dict[str, list[Any]] = {}
        with self._lock:
            conn = self._connection()
            if conn is None or not wanted:
                return out
            try:
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    for blob, value in conn.execute(
                        f"SELECT blob, value FROM docs WHERE blob IN ({marks})", chunk
                    ):
                        docs = _loads(value)
                        if isinstance(docs, list):
                            out[blob] = docs
            except sqlite3.Error:
                return {}
        return out

    def put_docs(self, rows: Iterable[tuple[str, list[Any]]]) -> None:
        encoded = [(blob, text) for blob, docs in rows if (text := exact_json(docs)) is not None]
        self._write("INSERT OR IGNORE INTO docs (blob, value) VALUES (?, ?)", encoded)

    # ------------------------------------------------------------------------------------ facts
    def has_commit(self, commit: str) -> bool:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return False
            try:
                return (
                    conn.execute("SELECT 1 FROM commits WHERE commit_id=?", (commit,)).fetchone() is not None
                )
            except sqlite3.Error:
                return False

    def get_facts(self, commit: str, kind: str, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Rows of one kind for one commit (all of them, or only `keys`)."""
        out: dict[str, Any] = {}
        with self._lock:
            conn = self._connection()
            if conn is None:
                return out
            try:
                if keys is None:
                    cur = conn.execute(
                        "SELECT key, value FROM facts WHERE commit_id=? AND kind=?", (commit, kind)
                    )
                    rows = list(cur)
                else:
                    wanted = list(keys)
                    rows = []
                    for start in range(0, len(wanted), 500):
                        chunk = wanted[start : start + 500]
                        marks = ",".join("?" * len(chunk))
                        rows.extend(
                            conn.execute(
                                f"SELECT key, value FROM facts WHERE commit_id=? AND kind=? AND key IN ({marks})",
                                (commit, kind, *chunk),
                            )
                        )
            except sqlite3.Error:
                return {}
        for key, value in rows:
            data = _loads(value)
            if data is not None:
                out[key] = data
        return out

    def put_facts(self, commit: str, kind: str, rows: Iterable[tuple[str, Any]]) -> None:
        encoded = [
            (commit, kind, key, text) for key, value in rows if (text := exact_json(value)) is not None
        ]
        self._write("INSERT OR REPLACE INTO facts (commit_id, kind, key, value) VALUES (?, ?, ?, ?)", encoded)

    def recent_commits(self, limit: int = 8) -> list[str]:
        """Commits with complete facts, most recently used first."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return []
            try:
                return [
                    r[0]
                    for r in conn.execute(
                        "SELECT commit_id FROM commits ORDER BY used DESC LIMIT ?", (limit,)
                    )
                ]
            except sqlite3.Error:
                return []

    def write_commit(
        self, commit: str, fill: Callable[[FactsWriter], None], used: float, keep: int = 8
    ) -> bool:
        """Write a commit's complete facts in one transaction, then mark it complete; all or nothing.

        Why one transaction: a commit marked complete is trusted to answer "this app is not here",
        so a half-written one (a full disk, a killed process) must never be marked.
        """
        with self._lock:
            conn = self._connection()
            if conn is None:
                return False
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM facts WHERE commit_id=?", (commit,))
                fill(FactsWriter(conn, commit))
                conn.execute("INSERT OR REPLACE INTO commits (commit_id, used) VALUES (?, ?)", (commit, used))
                self._prune(conn, keep)
                conn.execute("COMMIT")
                return True
            except (sqlite3.Error, ValueError):
                _rollback(conn)
                return False

    @staticmethod
    def _prune(conn: sqlite3.Connection, keep: int) -> None:
        stale = [
            r[0]
            for r in conn.execute(
                "SELECT commit_id FROM commits ORDER BY used DESC LIMIT -1 OFFSET ?", (keep,)
            )
        ]
        for c in stale:
            conn.execute("DELETE FROM facts WHERE commit_id=?", (c,))
            conn.execute("DELETE FROM commits WHERE commit_id=?", (c,))

    def touch_commit(self, commit: str, used: float) -> None:
        """Note that `commit`'s facts were used (pruning keeps the most recently used)."""
        self._write("UPDATE commits SET used=? WHERE commit_id=?", [(used, commit)])

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(conn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._opened = self.path is None


class FactsWriter:
    """Writes one commit's facts inside `CacheDB.write_commit`'s transaction; errors propagate."""

    def __init__(self, conn: sqlite3.Connection, commit: str) -> None:
        self.conn = conn
        self.commit = commit

    def put(self, kind: str, rows: Iterable[tuple[str, Any]], *, exact: bool = True) -> None:
        """Store rows; with `exact`, a value that does not survive JSON exactly aborts the write."""
        encoded = []
        for key, value in rows:
            text = exact_json(value)
            if text is None:
                if exact:
                    raise ValueError(f"{kind} {key!r} cannot be stored exactly")
                continue
            encoded.append((self.commit, kind, key, text))
        self.conn.executemany(
            "INSERT OR REPLACE INTO facts (commit_id, kind, key, value) VALUES (?, ?, ?, ?)", encoded
        )

    def copy_from(self, src: str, kind: str, exclude: Iterable[str]) -> None:
        """Every `kind` row of commit `src` whose key is not in `exclude`."""
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS skip_keys (key TEXT PRIMARY KEY)")
        self.conn.execute("DELETE FROM skip_keys")
        self.conn.executemany("INSERT OR IGNORE INTO skip_keys (key) VALUES (?)", [(k,) for k in exclude])
        self.conn.execute(
            "INSERT OR REPLACE INTO facts (commit_id, kind, key, value) SELECT ?, kind, key, value"
            " FROM facts WHERE commit_id=? AND kind=? AND key NOT IN (SELECT key FROM skip_keys)",
            (self.commit, src, kind),
        )
        self.conn.execute("DELETE FROM skip_keys")


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
