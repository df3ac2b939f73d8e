"""The default store: one SQLite file, no server to run.

One connection per store object, used under a lock: the bot calls the store from worker threads
(asyncio.to_thread) and sqlite3 connections are not safe to share without one. WAL lets readers in
other processes (the CLI, a second bot during a rolling restart) work while we write, and every
write transaction starts with BEGIN IMMEDIATE so its read-check-write cannot interleave with
another writer's, in this process or another.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from opsbot.errors import ConfigError
from opsbot.store.common import SqlStore, Tx, as_utc, log
from opsbot.store.migrations.sqlite import MIGRATIONS, SCHEMA_VERSION_DDL

MEMORY = ":memory:"
#: How long a writer waits for another process's write lock before giving up (milliseconds).
BUSY_TIMEOUT_MS = 30_000
#: STRICT tables arrived in 3.37 (RETURNING, which we also need, in 3.35).
MIN_SQLITE = (3, 37, 0)

_JSON_OUT = frozenset({"fields", "payload", "result", "effect"})


class _SqliteTx:
    """Rows as plain dicts with JSON already decoded, the same shape psycopg gives the other backend."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _row(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(zip(row.keys(), tuple(row), strict=True))
        for name in _JSON_OUT.intersection(out):
            if out[name] is not None:
                out[name] = json.loads(out[name])
        return out

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        cur = self._conn.execute(sql, tuple(params))
        try:
            row = cur.fetchone()
            # Drain RETURNING statements: SQLite finishes the write only when the cursor is exhausted.
            cur.fetchall()
        finally:
            cur.close()
        return None if row is None else self._row(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return [self._row(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return cur.rowcount
        finally:
            cur.close()


class SqliteStore(SqlStore):
    schema_version_ddl = SCHEMA_VERSION_DDL
    migrations = MIGRATIONS

    def __init__(self, path: str | Path, *, migrate: bool = True) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old for opsbot's store "
                f"(needs {'.'.join(map(str, MIN_SQLITE))}+); use a newer Python build or PostgreSQL"
            )
        self.path = str(path)
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the SQLite database at {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path != MEMORY:
                self._enable_wal()
            # NORMAL in WAL mode: a commit survives a process crash; only an OS crash or power
            # loss may drop the last transactions, and never corrupts the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            if migrate:
                self.migrate()
        except BaseException:
            conn.close()
            raise
        log.info("store opened: sqlite %s", self.path)

    def _enable_wal(self) -> None:
        # Switching a fresh file to WAL needs an exclusive lock for a moment; when two processes
        # create the file together one may see SQLITE_BUSY here without the busy handler's help.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # hooks -------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, write: bool) -> Iterator[Tx]:
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _lock_migrations(self, tx: Tx) -> None:
        """Nothing to add: the migration transaction is BEGIN IMMEDIATE, SQLite's whole-file write lock."""

    def _ts(self, value: datetime) -> str:
        # Fixed width (always microseconds, always +00:00) so comparing text compares times.
        return as_utc(value).isoformat(timespec="microseconds")

    def _json(self, value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
