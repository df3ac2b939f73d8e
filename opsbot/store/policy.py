"""The policy side of the store: the append-only audit log, freezes, locks and revert claims.

A mixin of `SqlStore`, so it shares the backends' transactions and runs unchanged on SQLite and
PostgreSQL. The audit log has an append path and read paths only: there is no method here (or
anywhere in opsbot) that updates or deletes an audit row, and the schema's triggers refuse it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from opsbot.core.model import utcnow
from opsbot.policy.model import AuditEntry, Freeze, Lock, NewAudit

#: Longest stored reason or detail: a reason typed in chat is a sentence, not a document.
MAX_TEXT = 2000


class _Tx(Protocol):
    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None: ...

    def all(self, sql: str, params: Any = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Any = ()) -> int: ...


def _time(value: Any) -> datetime:
    from opsbot.store.common import from_db_time

    out = from_db_time(value)
    assert out is not None
    return out


def audit_from_row(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=_time(row["at"]),
        actor=row["actor"],
        action=row["action"],
        request_id=row["request_id"],
        pr_number=row["pr_number"],
        app=row["app"],
        env=row["env"],
        reason=row["reason"],
        detail=row["detail"],
    )


def freeze_from_row(row: Mapping[str, Any]) -> Freeze:
    return Freeze(
        id=int(row["id"]),
        env=row["env"],
        set_by=row["set_by"],
        reason=row["reason"],
        started_at=_time(row["started_at"]),
        ends_at=_time(row["ends_at"]) if row["ends_at"] is not None else None,
        lifted_at=_time(row["lifted_at"]) if row["lifted_at"] is not None else None,
        lifted_by=row["lifted_by"],
    )


def lock_from_row(row: Mapping[str, Any]) -> Lock:
    return Lock(
        id=int(row["id"]),
        app=row["app"],
        env=row["env"],
        holder=row["holder"],
        reason=row["reason"],
        since=_time(row["since"]),
        link=row["link"],
    )


class PolicySql:
    """Policy queries on the backend hooks of `SqlStore` (`_tx`, `_ts`)."""

    def _tx(self, write: bool) -> AbstractContextManager[Any]:  # provided by SqlStore
        raise NotImplementedError

    def _ts(self, value: datetime) -> Any:  # provided by SqlStore
        raise NotImplementedError

    def _newest(self, table: str, where: list[str], params: list[Any], limit: int) -> list[dict[str, Any]]:
        """`SELECT * FROM table [WHERE a AND b …] ORDER BY id DESC LIMIT n`: the shared tail of the
        list queries (requests, audit), so the filters are the only thing each one writes."""
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._tx(write=False) as tx:
            rows: list[dict[str, Any]] = tx.all(sql, [*params, max(0, int(limit))])
        return rows

    # audit -------------------------------------------------------------------------------------
    def _audit_in(self, tx: _Tx, entry: NewAudit, at: datetime | None = None) -> dict[str, Any]:
        """Append inside the caller's transaction, so a transition and its audit row commit together."""
        row = tx.one(
            "INSERT INTO audit (at, actor, action, request_id, pr_number, app, env, reason, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                self._ts(at or utcnow()),
                entry.actor or "",
                entry.action,
                entry.request_id or "",
                entry.pr_number,
                entry.app or "",
                entry.env or "",
                (entry.reason or "")[:MAX_TEXT],
                (entry.detail or "")[:MAX_TEXT],
            ),
        )
        assert row is not None
        return row

    def audit_add(self, entry: NewAudit) -> AuditEntry:
        if not entry.action:
            raise ValueError("an audit row needs an action")
        with self._tx(write=True) as tx:
            return audit_from_row(self._audit_in(tx, entry))

    def audit_list(
        self,
        *,
        app: str | None = None,
        env: str | None = None,
        since: datetime | None = None,
        request_id: str | None = None,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """The newest `limit` matching rows, oldest first (the order things happened)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("app", app), ("env", env), ("request_id", request_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(self._ts(since))
        return [audit_from_row(r) for r in reversed(self._newest("audit", where, params, limit))]

    # freezes -----------------------------------------------------------------------------------
    def freeze_add(
        self, env: str, set_by: str, reason: str, started_at: datetime, ends_at: datetime | None
    ) -> Freeze:
        with self._tx(write=True) as tx:
            row = tx.one(
                "INSERT INTO freezes (env, set_by, reason, started_at, ends_at) VALUES (?, ?, ?, ?, ?) "
                "RETURNING *",
                (env, set_by, reason[:MAX_TEXT], self._ts(started_at), None if ends_at is None else self._ts(ends_at)),
            )
            assert row is not None
            self._audit_in(
                tx,
                NewAudit(set_by, "freeze", env=env, reason=reason,
                         detail=f"until {ends_at.isoformat()}" if ends_at else "until unfrozen"),
                started_at,
            )  # fmt: skip
        return freeze_from_row(row)

    def freezes_active(self, now: datetime, env: str | None = None) -> list[Freeze]:
        sql = "SELECT * FROM freezes WHERE lifted_at IS NULL AND started_at <= ? AND (ends_at IS NULL OR ends_at > ?)"
        params: list[Any] = [self._ts(now), self._ts(now)]
        if env is not None:
            sql += " AND env = ?"
            params.append(env)
        with self._tx(write=False) as tx:
            rows = tx.all(sql + " ORDER BY id", params)
        return [freeze_from_row(r) for r in rows]

    def freeze_lift(self, env: str, by: str, now: datetime) -> list[Freeze]:
        """End every freeze of `env` in force at `now`; the ones lifted (none: nothing was frozen)."""
        with self._tx(write=True) as tx:
            rows = tx.all(
                "UPDATE freezes SET lifted_at = ?, lifted_by = ? WHERE env = ? AND lifted_at IS NULL "
                "AND started_at <= ? AND (ends_at IS NULL OR ends_at > ?) RETURNING *",
                (self._ts(now), by, env, self._ts(now), self._ts(now)),
            )
            if rows:
                self._audit_in(tx, NewAudit(by, "unfreeze", env=env, detail=f"{len(rows)} freeze(s) lifted"), now)
        return [freeze_from_row(r) for r in rows]

    # locks -------------------------------------------------------------------------------------
    def lock_take(self, app: str, env: str, holder: str, reason: str, link: str, now: datetime) -> tuple[Lock, bool]:
        """Take the lock of app/env; (the lock in force, whether this call took it)."""
        with self._tx(write=True) as tx:
            row = tx.one(
                "INSERT INTO locks (app, env, holder, reason, link, since) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING *",
                (app, env, holder, reason[:MAX_TEXT], link, self._ts(now)),
            )
            if row is not None:
                self._audit_in(tx, NewAudit(holder, "lock", app=app, env=env, reason=reason), now)
                return lock_from_row(row), True
            held = tx.one("SELECT * FROM locks WHERE app = ? AND env = ? AND released_at IS NULL", (app, env))
        assert held is not None
        return lock_from_row(held), False

    def lock_get(self, app: str, env: str) -> Lock | None:
        with self._tx(write=False) as tx:
            row = tx.one("SELECT * FROM locks WHERE app = ? AND env = ? AND released_at IS NULL", (app, env))
        return None if row is None else lock_from_row(row)

    def locks_active(self, env: str | None = None) -> list[Lock]:
        sql = "SELECT * FROM locks WHERE released_at IS NULL"
        params: list[Any] = []
        if env is not None:
            sql += " AND env = ?"
            params.append(env)
        with self._tx(write=False) as tx:
            rows = tx.all(sql + " ORDER BY id", params)
        return [lock_from_row(r) for r in rows]

    def lock_release(self, app: str, env: str, by: str, now: datetime) -> Lock | None:
        with self._tx(write=True) as tx:
            row = tx.one(
                "UPDATE locks SET released_at = ?, released_by = ? WHERE app = ? AND env = ? "
                "AND released_at IS NULL RETURNING *",
                (self._ts(now), by, app, env),
            )
            if row is not None:
                self._audit_in(tx, NewAudit(by, "unlock", app=app, env=env, detail=f"held by {row['holder']}"), now)
        return None if row is None else lock_from_row(row)

    # reverts -----------------------------------------------------------------------------------
    def revert_claim(self, request_id: str) -> bool:
        """Claim the one automatic revert of a failed request; False when it was claimed before."""
        with self._tx(write=True) as tx:
            added = tx.run(
                "INSERT INTO reverts (request_id, revert_request_id, at) VALUES (?, '', ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (request_id, self._ts(utcnow())),
            )
        return added == 1

    def revert_set(self, request_id: str, revert_request_id: str) -> None:
        with self._tx(write=True) as tx:
            tx.run(
                "UPDATE reverts SET revert_request_id = ? WHERE request_id = ? AND revert_request_id = ''",
                (revert_request_id, request_id),
            )

    def revert_of(self, request_id: str) -> str | None:
        """The revert request opened for `request_id` ('' while it is being opened), or None."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT revert_request_id FROM reverts WHERE request_id = ?", (request_id,))
        return None if row is None else str(row["revert_request_id"])

    def is_revert(self, request_id: str) -> bool:
        """Whether `request_id` is itself an automatic revert (whose failure triggers no other)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT request_id FROM reverts WHERE revert_request_id = ?", (request_id,))
        return row is not None
