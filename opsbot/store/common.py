"""Everything both SQL backends share: ids, row mapping, transition rules, and the queries themselves.

The two backends differ only in how they open a transaction, how they spell a parameter, and how
times and JSON travel to the driver; so the Store logic is written once here (`SqlStore`) and each
backend supplies those few hooks. One implementation means one set of bugs, and the shared test
suite proves both backends behave the same.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from opsbot.core.model import TRANSITIONS, Approval, Request, RequestState, Transition, utcnow
from opsbot.core.ports import InboxItem, NewRequest, OpenRequestExists, OutboxItem
from opsbot.errors import ConfigError
from opsbot.policy.model import NewAudit
from opsbot.store.migrations import Migration
from opsbot.store.policy import PolicySql

log = logging.getLogger("opsbot.store")

# --------------------------------------------------------------------------------------------- ids

ID_PREFIX = "R"
# People type ids in chat: "R12", "r12", "12" and "#R12" all mean the same request. 18 digits keep
# the number inside a signed 64-bit column.
_ID_RE = re.compile(r"^#?[Rr]?0*(\d{1,18})$")


def format_id(number: int) -> str:
    return f"{ID_PREFIX}{number}"


def parse_id(text: str | int) -> int | None:
    """The row number behind a typed id, or None when it cannot be one (then nothing matches)."""
    if isinstance(text, int):
        return text if text > 0 else None
    match = _ID_RE.match(text.strip())
    if not match:
        return None
    number = int(match.group(1))
    return number if number > 0 else None


# --------------------------------------------------------------------------------------------- rules


def allowed(current: RequestState, target: RequestState) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


# --------------------------------------------------------------------------------------------- values

#: Request columns a caller may set through update_request/transition. `state` moves only through
#: transition (so it is audited); ids and creation time never move.
TEXT_COLUMNS = frozenset(
    {
        "intent_key", "command", "verb", "app", "env", "requester", "forge", "branch", "base_branch",
        "base_sha", "head_sha", "pr_url", "merge_sha", "title", "summary", "channel", "thread_ts",
    }
)  # fmt: skip
TIME_COLUMNS = frozenset({"merged_at", "deployed_at"})
INT_COLUMNS = frozenset({"pr_number", "approvals_needed"})
NULLABLE_INT_COLUMNS = frozenset({"pr_number"})
JSON_COLUMNS = frozenset({"fields"})
UPDATABLE = TEXT_COLUMNS | TIME_COLUMNS | INT_COLUMNS | JSON_COLUMNS

#: Longest stored outbox error: enough to diagnose, short enough that a huge upstream body can't bloat rows.
MAX_ERROR_CHARS = 2000


def as_utc(value: datetime) -> datetime:
    """Refuse naive datetimes: a naive value is a bug upstream (local time or utcnow()), not data."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "naive datetime given to the store; use timezone-aware UTC (opsbot.core.model.utcnow)"
        )
    return value.astimezone(UTC)


def from_db_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"unexpected time value from the database: {type(value).__name__}")
    if value.tzinfo is None:  # written by us as UTC; only a hand-edited row could be naive
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate keyword fields before any SQL runs, so a typo fails loudly and writes nothing."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "state":
            raise ValueError("state changes only through transition(), which records who moved it")
        if name not in UPDATABLE:
            raise ValueError(f"unknown or read-only request field {name!r}")
        if name in TEXT_COLUMNS:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise TypeError(f"request field {name!r} must be a str, got {type(value).__name__}")
        elif name in TIME_COLUMNS:
            value = None if value is None else as_utc(value)
        elif name in INT_COLUMNS:
            if value is None and name in NULLABLE_INT_COLUMNS:
                pass
            elif isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"request field {name!r} must be an int, got {type(value).__name__}")
        elif name in JSON_COLUMNS:
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise TypeError(f"request field {name!r} must be a list of dicts")
            json.dumps(value)  # not JSON-able -> TypeError now, not half-way through a transaction
        out[name] = value
    return out


def check_payload(payload: Any, what: str) -> None:
    if not isinstance(payload, dict):
        raise TypeError(f"{what} must be a dict, got {type(payload).__name__}")
    json.dumps(payload)


def redact_url(url: str) -> str:
    """A database URL fit for a log line: the password (if any) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# --------------------------------------------------------------------------------------------- rows


def request_from_row(row: Mapping[str, Any]) -> Request:
    created = from_db_time(row["created_at"])
    updated = from_db_time(row["updated_at"])
    assert created is not None and updated is not None
    return Request(
        id=format_id(int(row["id"])),
        intent_key=row["intent_key"],
        command=row["command"],
        verb=row["verb"],
        app=row["app"],
        env=row["env"],
        requester=row["requester"],
        state=RequestState(row["state"]),
        forge=row["forge"],
        branch=row["branch"],
        base_branch=row["base_branch"],
        base_sha=row["base_sha"],
        head_sha=row["head_sha"],
        pr_number=row["pr_number"],
        pr_url=row["pr_url"],
        merge_sha=row["merge_sha"],
        title=row["title"],
        summary=row["summary"],
        channel=row["channel"],
        thread_ts=row["thread_ts"],
        fields=list(row["fields"] or []),
        approvals_needed=int(row["approvals_needed"]),
        created_at=created,
        updated_at=updated,
        merged_at=from_db_time(row["merged_at"]),
        deployed_at=from_db_time(row["deployed_at"]),
    )


def transition_from_row(row: Mapping[str, Any]) -> Transition:
    at = from_db_time(row["at"])
    assert at is not None
    return Transition(
        request_id=format_id(int(row["request_id"])),
        from_state=RequestState(row["from_state"]) if row["from_state"] else None,
        to_state=RequestState(row["to_state"]),
        actor=row["actor"],
        detail=row["detail"],
        at=at,
    )


def approval_from_row(row: Mapping[str, Any]) -> Approval:
    at = from_db_time(row["at"])
    assert at is not None
    effect = tuple(tuple(str(v) for v in item) for item in (row.get("effect") or []))
    return Approval(
        request_id=format_id(int(row["request_id"])),
        approver=row["approver"],
        source=row["source"],
        at=at,
        head_sha=row.get("head_sha") or "",
        effect=effect,  # type: ignore[arg-type]
    )


def inbox_from_row(row: Mapping[str, Any]) -> InboxItem:
    received = from_db_time(row["received_at"])
    assert received is not None
    return InboxItem(
        id=int(row["id"]), source=row["source"], key=row["key"], payload=row["payload"], received_at=received
    )


def outbox_from_row(row: Mapping[str, Any]) -> OutboxItem:
    next_at = from_db_time(row["next_at"])
    assert next_at is not None
    return OutboxItem(
        id=int(row["id"]),
        key=row["key"],
        kind=row["kind"],
        payload=row["payload"],
        attempts=int(row["attempts"]),
        next_at=next_at,
    )


def _audit_of(row: Mapping[str, Any], action: str, actor: str, detail: str) -> NewAudit:
    """The audit row of a request event, written in the same transaction as the event itself, so
    every path that moves a request (chat, CLI, forge webhook, deploy intake) is audited."""
    return NewAudit(
        actor=actor,
        action=action,
        request_id=format_id(int(row["id"])),
        pr_number=row["pr_number"],
        app=row["app"],
        env=row["env"],
        detail=detail,
    )


# --------------------------------------------------------------------------------------------- engine


class Tx(Protocol):
    """One open transaction. SQL uses `?` placeholders; the backend translates if it must."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        ...


#: Open states as SQL: must read exactly like the predicate of the requests_one_open_intent index.
_OPEN_PREDICATE = "state IN ('proposed', 'approved')"

_REQUEST_INSERT_COLUMNS = (
    "intent_key", "command", "verb", "app", "env", "requester", "state", "forge", "branch",
    "base_branch", "base_sha", "title", "summary", "fields", "approvals_needed", "channel",
    "thread_ts", "created_at", "updated_at",
)  # fmt: skip


class SqlStore(PolicySql, ABC):
    """The Store protocol on any SQL engine that has RETURNING, ON CONFLICT and transactional DDL."""

    #: Appended to the SELECT that reads a request's state before a transition (row lock where supported).
    lock_clause: str = ""
    schema_version_ddl: str
    migrations: tuple[Migration, ...]

    # hooks -------------------------------------------------------------------------------------
    @abstractmethod
    def _tx(self, write: bool) -> AbstractContextManager[Tx]:
        """A transaction committed when the block exits normally, rolled back when it raises.

        `write=True` must take the write lock up front (SQLite BEGIN IMMEDIATE), so that a
        read-check-write sequence inside it cannot interleave with another writer.
        """

    @abstractmethod
    def _ts(self, value: datetime) -> Any:
        """A UTC datetime as the driver should receive it."""

    @abstractmethod
    def _json(self, value: Any) -> Any:
        """A JSON value as the driver should receive it."""

    @abstractmethod
    def _lock_migrations(self, tx: Tx) -> None:
        """Serialise concurrent migration runs beyond what `_tx(write=True)` already does."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # migrations --------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Bring the schema up to date; the versions applied now (empty when already current).

        Runs in one transaction under the backend's write/advisory lock, so two processes starting
        together apply each migration once: the second waits, then finds nothing to do.
        """
        known = max((m.version for m in self.migrations), default=0)
        applied: list[int] = []
        with self._tx(write=True) as tx:
            self._lock_migrations(tx)
            tx.run(self.schema_version_ddl)
            done = {int(r["version"]) for r in tx.all("SELECT version FROM schema_version")}
            current = max(done, default=0)
            if current > known:
                raise ConfigError(
                    f"the database schema is at version {current}, newer than this opsbot knows ({known}); "
                    "upgrade opsbot or point OPSBOT_DATABASE_URL at another database"
                )
            now = self._ts(utcnow())
            for migration in self.migrations:
                # Not `<= current`: a version numbered below one already applied (a parallel
                # branch's migration that landed later) must still run.
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    tx.run(statement)
                tx.run(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now),
                )
                applied.append(migration.version)
        if applied:
            log.info("store schema migrated to version %d (applied %s)", applied[-1], applied)
        return applied

    def schema_version(self) -> int:
        with self._tx(write=False) as tx:
            row = tx.one("SELECT MAX(version) AS v FROM schema_version")
        return int(row["v"]) if row and row["v"] is not None else 0

    # requests ----------------------------------------------------------------------------------
    def create_request(self, new: NewRequest) -> Request:
        """Insert a proposed request, unless its intent already has an open one (OpenRequestExists).

        Why in the store: with several replicas the only place two of them meet is the database, so
        "one open request per intent" is a partial unique index, not a lock in one process.
        """
        fields = check_fields({"fields": list(new.fields)})["fields"]
        placeholders = ", ".join("?" for _ in _REQUEST_INSERT_COLUMNS)
        for _attempt in range(5):
            now = self._ts(utcnow())
            values = (
                new.intent_key, new.command, new.verb, new.app, new.env, new.requester,
                RequestState.PROPOSED.value, new.forge, new.branch, new.base_branch, new.base_sha, new.title,
                new.summary, self._json(fields), int(new.approvals_needed), new.channel or "",
                new.thread_ts or "", now, now,
            )  # fmt: skip
            with self._tx(write=True) as tx:
                row = tx.one(
                    f"INSERT INTO requests ({', '.join(_REQUEST_INSERT_COLUMNS)}) "
                    f"VALUES ({placeholders}) "
                    f"ON CONFLICT (intent_key) WHERE {_OPEN_PREDICATE} DO NOTHING RETURNING *",
                    values,
                )
                if row is None:
                    existing = tx.one(
                        f"SELECT * FROM requests WHERE intent_key = ? AND {_OPEN_PREDICATE}",
                        (new.intent_key,),
                    )
                    if existing is None:
                        continue  # it closed between our insert and our look: try again
                    raise OpenRequestExists(request_from_row(existing))
                tx.run(
                    "INSERT INTO transitions (request_id, from_state, to_state, actor, detail, at) "
                    "VALUES (?, NULL, ?, ?, ?, ?)",
                    (row["id"], RequestState.PROPOSED.value, new.requester, "", now),
                )
                self._audit_in(tx, _audit_of(row, RequestState.PROPOSED.value, new.requester, new.command))
            return request_from_row(row)
        raise RuntimeError(f"could not create a request for {new.intent_key!r}: it kept changing under us")

    def claim_thread(self, request_id: str, owner: str) -> bool:
        """True for exactly one caller per request: the one that may post its thread root."""
        number = parse_id(request_id)
        if number is None or not owner:
            return False
        with self._tx(write=True) as tx:
            won = tx.run(
                "UPDATE requests SET thread_claim = ? WHERE id = ? AND thread_claim = '' AND thread_ts = ''",
                (owner, number),
            )
        return won == 1

    def release_thread(self, request_id: str, owner: str) -> None:
        """Give up a claim whose root could not be posted, so the next ask may post it."""
        number = parse_id(request_id)
        if number is None:
            return
        with self._tx(write=True) as tx:
            tx.run("UPDATE requests SET thread_claim = '' WHERE id = ? AND thread_claim = ?", (number, owner))

    def get_request(self, request_id: str) -> Request | None:
        number = parse_id(request_id)
        if number is None:
            return None
        return self._one_request("SELECT * FROM requests WHERE id = ?", (number,))

    def find_open_request(self, intent_key: str) -> Request | None:
        return self._one_request(
            "SELECT * FROM requests WHERE intent_key = ? AND state IN (?, ?) ORDER BY id DESC LIMIT 1",
            (intent_key, RequestState.PROPOSED.value, RequestState.APPROVED.value),
        )

    def find_request_by_pr(self, forge: str, pr_number: int) -> Request | None:
        return self._one_request(
            "SELECT * FROM requests WHERE forge = ? AND pr_number = ? ORDER BY id DESC LIMIT 1",
            (forge, int(pr_number)),
        )

    def find_request_by_branch(self, branch: str) -> Request | None:
        return self._one_request(
            "SELECT * FROM requests WHERE branch = ? ORDER BY id DESC LIMIT 1",
            (branch,),
        )

    def list_requests(
        self,
        *,
        states: Sequence[RequestState] | None = None,
        app: str | None = None,
        env: str | None = None,
        limit: int = 50,
    ) -> list[Request]:
        where: list[str] = []
        params: list[Any] = []
        if states is not None:
            wanted = [RequestState(s).value for s in states]
            if not wanted:
                return []
            where.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        if app is not None:
            where.append("app = ?")
            params.append(app)
        if env is not None:
            where.append("env = ?")
            params.append(env)
        return [request_from_row(r) for r in self._newest("requests", where, params, limit)]

    def update_request(self, request_id: str, **fields: Any) -> Request:
        values = check_fields(fields)
        number = parse_id(request_id)
        if number is None:
            raise KeyError(f"no request {request_id!r}")
        assignments, params = self._assignments(values)
        with self._tx(write=True) as tx:
            before = tx.one("SELECT pr_number FROM requests WHERE id = ?", (number,)) if "pr_number" in values else None
            row = tx.one(
                f"UPDATE requests SET updated_at = ?{assignments} WHERE id = ? RETURNING *",
                (self._ts(utcnow()), *params, number),
            )
            if row is not None and before is not None and row["pr_number"] not in (None, before["pr_number"]):
                # The PR is opened after the proposal row is written: its number gets its own row.
                self._audit_in(tx, _audit_of(row, "opened", row["requester"], row["pr_url"]))
        if row is None:
            raise KeyError(f"no request {request_id!r}")
        return request_from_row(row)

    def transition(
        self,
        request_id: str,
        to_state: RequestState,
        actor: str,
        detail: str = "",
        **fields: Any,
    ) -> Request | None:
        target = RequestState(to_state)
        values = check_fields(fields)
        number = parse_id(request_id)
        if number is None:
            return None
        now = utcnow()
        # The moment of the move is the natural default for these; a caller that knows better
        # (the forge's merged_at, the agent's event time) passes its own.
        if target is RequestState.MERGED:
            values.setdefault("merged_at", now)
        elif target is RequestState.DEPLOYED:
            values.setdefault("deployed_at", now)
        assignments, params = self._assignments(values)
        with self._tx(write=True) as tx:
            current_row = tx.one(f"SELECT state FROM requests WHERE id = ?{self.lock_clause}", (number,))
            if current_row is None:
                return None
            current = RequestState(current_row["state"])
            if not allowed(current, target):
                return None
            # Compare-and-set: even without the row lock, a racing writer makes this match nothing.
            row = tx.one(
                f"UPDATE requests SET state = ?, updated_at = ?{assignments} "
                "WHERE id = ? AND state = ? RETURNING *",
                (target.value, self._ts(now), *params, number, current.value),
            )
            if row is None:
                return None
            tx.run(
                "INSERT INTO transitions (request_id, from_state, to_state, actor, detail, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (number, current.value, target.value, actor, detail, self._ts(now)),
            )
            self._audit_in(tx, _audit_of(row, target.value, actor, detail), now)
        return request_from_row(row)

    def transitions(self, request_id: str) -> list[Transition]:
        number = parse_id(request_id)
        if number is None:
            return []
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT * FROM transitions WHERE request_id = ? ORDER BY id", (number,))
        return [transition_from_row(r) for r in rows]

    # approvals ---------------------------------------------------------------------------------
    def add_approval(
        self, request_id: str, approver: str, source: str, head_sha: str = "", effect: Sequence[Sequence[str]] = ()
    ) -> bool:
        number = parse_id(request_id)
        if number is None:
            raise KeyError(f"no request {request_id!r}")
        effect_json = [list(item) for item in effect]
        with self._tx(write=True) as tx:
            req = tx.one("SELECT * FROM requests WHERE id = ?", (number,))
            if req is None:
                raise KeyError(f"no request {request_id!r}")
            added = tx.run(
                "INSERT INTO approvals (request_id, approver, source, at, head_sha, effect) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (request_id, approver) DO NOTHING",
                (number, approver, source, self._ts(utcnow()), head_sha, self._json(effect_json)),
            )
            if added == 1:
                self._audit_in(tx, _audit_of(req, "approval", approver, f"approved in {source}"))
        return added == 1

    def rebind_approvals(self, request_id: str, head_sha: str, effect: Sequence[Sequence[str]]) -> int:
        """opsbot re-planned the request with the same effect: its approvals now hold for the new head."""
        number = parse_id(request_id)
        if number is None:
            return 0
        with self._tx(write=True) as tx:
            return tx.run(
                "UPDATE approvals SET head_sha = ?, effect = ? WHERE request_id = ?",
                (head_sha, self._json([list(item) for item in effect]), number),
            )

    def clear_approvals(self, request_id: str) -> int:
        """Forget every approval of a request; how many there were."""
        number = parse_id(request_id)
        if number is None:
            return 0
        with self._tx(write=True) as tx:
            return tx.run("DELETE FROM approvals WHERE request_id = ?", (number,))

    def approvals(self, request_id: str) -> list[Approval]:
        number = parse_id(request_id)
        if number is None:
            return []
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT * FROM approvals WHERE request_id = ? ORDER BY at, approver", (number,))
        return [approval_from_row(r) for r in rows]

    # inbox -------------------------------------------------------------------------------------
    def inbox_add(self, source: str, key: str, payload: dict[str, Any]) -> bool:
        check_payload(payload, "inbox payload")
        with self._tx(write=True) as tx:
            added = tx.run(
                "INSERT INTO inbox (source, key, payload, received_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (source, key) DO NOTHING",
                (source, key, self._json(payload), self._ts(utcnow())),
            )
        return added == 1

    def inbox_pending(self, limit: int = 100) -> list[InboxItem]:
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT id, source, key, payload, received_at FROM inbox "
                "WHERE done_at IS NULL ORDER BY id LIMIT ?",
                (max(0, int(limit)),),
            )
        return [inbox_from_row(r) for r in rows]

    def inbox_done(self, item_id: int) -> None:
        with self._tx(write=True) as tx:
            tx.run(
                "UPDATE inbox SET done_at = ? WHERE id = ? AND done_at IS NULL",
                (self._ts(utcnow()), int(item_id)),
            )

    # outbox ------------------------------------------------------------------------------------
    def outbox_add(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        check_payload(payload, "outbox payload")
        now = self._ts(utcnow())
        with self._tx(write=True) as tx:
            added = tx.run(
                "INSERT INTO outbox (key, kind, payload, attempts, next_at, created_at) "
                "VALUES (?, ?, ?, 0, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, kind, self._json(payload), now, now),
            )
        return added == 1

    def outbox_due(self, now: datetime, limit: int = 50) -> list[OutboxItem]:
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT id, key, kind, payload, attempts, next_at FROM outbox "
                "WHERE done_at IS NULL AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                (self._ts(as_utc(now)), max(0, int(limit))),
            )
        return [outbox_from_row(r) for r in rows]

    def outbox_claim(self, now: datetime, owner: str, lease_seconds: float, limit: int = 50) -> list[OutboxItem]:
        """Due items this worker may post now: each is claimed (compare-and-set) for `lease_seconds`.

        Why: with several replicas every worker sees the same due rows; only the one whose UPDATE
        won may post. A worker that dies mid-post loses its claim when the lease runs out, and the
        item is posted by another — the one documented at-least-once window.
        """
        now = as_utc(now)
        until = now + timedelta(seconds=lease_seconds)
        claimed: list[OutboxItem] = []
        for item in self.outbox_due(now, limit):
            with self._tx(write=True) as tx:
                won = tx.run(
                    "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id = ? AND done_at IS NULL "
                    "AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)",
                    (owner, self._ts(until), int(item.id), self._ts(now), owner),
                )
            if won == 1:
                claimed.append(item)
        return claimed

    def outbox_done(self, item_id: int, result: dict[str, Any] | None = None) -> None:
        if result is not None:
            check_payload(result, "outbox result")
        with self._tx(write=True) as tx:
            tx.run(
                "UPDATE outbox SET done_at = ?, result = ? WHERE id = ? AND done_at IS NULL",
                (self._ts(utcnow()), None if result is None else self._json(result), int(item_id)),
            )

    def outbox_retry(self, item_id: int, next_at: datetime, error: str) -> None:
        with self._tx(write=True) as tx:
            tx.run(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                "WHERE id = ? AND done_at IS NULL",
                (self._ts(as_utc(next_at)), (error or "")[:MAX_ERROR_CHARS], int(item_id)),
            )

    def outbox_result(self, key: str) -> dict[str, Any] | None:
        """None while the item is not done; `{}` when it was done without a result."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT done_at, result FROM outbox WHERE key = ?", (key,))
        if row is None or row["done_at"] is None:
            return None
        result = row["result"]
        return dict(result) if result else {}

    # kv ----------------------------------------------------------------------------------------
    def kv_get(self, key: str) -> str | None:
        with self._tx(write=False) as tx:
            row = tx.one("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def kv_set(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"kv values are str, got {type(value).__name__}")
        with self._tx(write=True) as tx:
            tx.run(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, self._ts(utcnow())),
            )

    def ping(self) -> bool:
        """For /readyz: never raises, so a dead database reads as 'not ready' instead of a 500."""
        try:
            with self._tx(write=False) as tx:
                row = tx.one("SELECT 1 AS ok")
            return bool(row and row["ok"] == 1)
        except Exception as exc:
            log.warning("store ping failed: %s", type(exc).__name__)
            return False

    # helpers -----------------------------------------------------------------------------------
    def _one_request(self, sql: str, params: Sequence[Any]) -> Request | None:
        with self._tx(write=False) as tx:
            row = tx.one(sql, params)
        return None if row is None else request_from_row(row)

    def _assignments(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """`, col = ?` pairs for validated fields; names come from the UPDATABLE allow-list only."""
        sql = ""
        params: list[Any] = []
        for name, value in values.items():
            assert name in UPDATABLE
            sql += f", {name} = ?"
            if name in TIME_COLUMNS:
                params.append(None if value is None else self._ts(value))
            elif name in JSON_COLUMNS:
                params.append(self._json(value))
            else:
                params.append(value)
        return sql, params
