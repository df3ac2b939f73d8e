"""The PostgreSQL store, for teams that run several bot replicas or already operate a database.

psycopg 3 with a small built-in pool (psycopg_pool is not a dependency): the bot calls the store
from worker threads, and a handful of connections lets reads proceed while a write waits on a row
lock. Transitions lock the request row (SELECT ... FOR UPDATE) and then compare-and-set the state,
so two replicas handling the same redelivered webhook cannot both move a request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from opsbot.errors import ConfigError
from opsbot.store.common import SqlStore, Tx, as_utc, log, redact_url
from opsbot.store.migrations.postgres import MIGRATION_LOCK_KEY, MIGRATIONS, SCHEMA_VERSION_DDL

DEFAULT_POOL_SIZE = 4
CONNECT_TIMEOUT_S = 10


def _pg_sql(sql: str) -> str:
    # Our SQL is written with `?`; psycopg wants `%s`. None of our statements contain a literal
    # `%` or a jsonb `?` operator, which this simple rewrite would break.
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[DictRow]) -> None:
        self._cur = cur

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        self._cur.execute(_pg_sql(sql), tuple(params))
        return self._cur.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._cur.execute(_pg_sql(sql), tuple(params))
        return self._cur.fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(_pg_sql(sql), tuple(params))
        return self._cur.rowcount


class _Pool:
    """At most `size` connections, opened on demand; a broken one is dropped, not handed out again."""

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg.Connection[DictRow]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> psycopg.Connection[DictRow]:
        return psycopg.connect(
            self._conninfo,
            autocommit=True,  # transactions are explicit (conn.transaction()), never implicit
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="opsbot",
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("store is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                healthy = (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                )
                with self._lock:
                    keep = healthy and not self._closed
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresStore(SqlStore):
    lock_clause = " FOR UPDATE"
    schema_version_ddl = SCHEMA_VERSION_DDL
    migrations = MIGRATIONS

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, migrate: bool = True) -> None:
        if pool_size < 1:
            raise ConfigError("the PostgreSQL pool size must be at least 1")
        self._safe_url = redact_url(url)
        self._pool = _Pool(url, pool_size)
        if migrate:
            try:
                self.migrate()
            except psycopg.OperationalError as exc:
                self._pool.close()
                # psycopg's message names host and port, never the password.
                raise ConfigError(f"cannot connect to PostgreSQL at {self._safe_url}: {exc}".strip()) from exc
            except BaseException:
                self._pool.close()
                raise
        log.info("store opened: %s", self._safe_url)

    # hooks -------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, write: bool) -> Iterator[Tx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield _PgTx(cur)

    def _lock_migrations(self, tx: Tx) -> None:
        # Held until the transaction ends; a second starting process waits here, then sees the
        # versions the first one recorded and applies nothing.
        tx.one("SELECT pg_advisory_xact_lock(?) AS locked", (MIGRATION_LOCK_KEY,))

    def _ts(self, value: datetime) -> datetime:
        return as_utc(value)

    def _json(self, value: Any) -> Jsonb:
        return Jsonb(value)

    def close(self) -> None:
        self._pool.close()
