"""The audit log and the policy state (freezes, locks, revert claims) on both store backends.

The audit log is append-only at three levels, each tested here: the store API has no path that
updates or deletes a row, every request event writes its row in the same transaction, and the
database itself refuses UPDATE and DELETE on the table (triggers on SQLite and PostgreSQL).
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsbot.core.model import RequestState
from opsbot.core.ports import Store
from opsbot.policy.model import NewAudit
from opsbot.store import open_store
from opsbot.store.common import SqlStore
from opsbot.store.migrations import Migration, check_sequence
from opsbot.store.sqlite import SqliteStore
from tests.integration.test_store import new_request, race, raw_exec, raw_rows, store, store_url

__all__ = ["store", "store_url"]  # the two-backend fixtures of test_store

S = RequestState
T0 = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


def test_every_request_event_is_an_audit_row_written_with_it(store: Store) -> None:
    req = store.create_request(new_request(1))
    store.update_request(req.id, pr_number=12)
    assert store.add_approval(req.id, "U_BOB", "chat")
    assert not store.add_approval(req.id, "U_BOB", "chat")  # a double click is not a second row
    store.transition(req.id, S.APPROVED, "U_BOB", "approved by U_BOB")
    store.transition(req.id, S.MERGED, "U_BOB", "merged as abc1234")
    assert store.transition(req.id, S.MERGED, "U_BOB") is None  # a redelivery writes nothing
    store.transition(req.id, S.FAILED, "flux", "HealthCheckFailed")
    rows = store.audit_list(request_id=req.id)
    assert [(r.action, r.actor) for r in rows] == [
        ("proposed", "U_ALICE"),
        ("opened", "U_ALICE"),  # the PR number, once it is known
        ("approval", "U_BOB"),
        ("approved", "U_BOB"),
        ("merged", "U_BOB"),
        ("failed", "flux"),
    ]
    assert rows[0].detail == "scale web 1 in production"  # what was asked, as typed
    assert [r.pr_number for r in rows] == [None, 12, 12, 12, 12, 12]
    store.update_request(req.id, pr_number=12, head_sha="b" * 40)  # the same PR again: no new row
    assert len(store.audit_list(request_id=req.id)) == len(rows)
    assert {(r.app, r.env) for r in rows} == {("web", "production")}
    assert rows[-1].detail == "HealthCheckFailed"
    assert all(r.at.tzinfo is not None for r in rows)


def test_audit_filters_by_app_env_and_since(store: Store) -> None:
    store.audit_add(NewAudit("U1", "freeze", env="production", reason="release"))
    store.audit_add(NewAudit("U2", "lock", app="web", env="staging", reason="load test"))
    store.audit_add(NewAudit("U3", "lock", app="api", env="production"))
    assert [r.actor for r in store.audit_list(env="production")] == ["U1", "U3"]
    assert [r.actor for r in store.audit_list(app="web")] == ["U2"]
    assert [r.actor for r in store.audit_list(limit=2)] == ["U2", "U3"]  # the newest two, in order
    assert store.audit_list(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(store.audit_list(since=datetime.now(UTC) - timedelta(hours=1))) == 3
    with pytest.raises(ValueError, match="action"):
        store.audit_add(NewAudit("U1", ""))


def test_the_store_api_has_no_path_that_updates_or_deletes_audit_rows() -> None:
    """Read from the source: no Store or SqlStore method writes UPDATE/DELETE against `audit`, and the
    only public audit methods are append and read."""
    public = {n for n in dir(SqlStore) if "audit" in n and not n.startswith("_")}
    assert public == {"audit_add", "audit_list"}
    assert {n for n in Store.__dict__ if "audit" in n} == {"audit_add", "audit_list"}
    import opsbot.store.common as common
    import opsbot.store.policy as policy

    source = (inspect.getsource(common) + inspect.getsource(policy)).upper()
    for verb in ("UPDATE AUDIT", "DELETE FROM AUDIT", "TRUNCATE"):
        assert verb not in " ".join(source.split()), verb


def test_the_database_refuses_update_and_delete_of_audit_rows(store_url: str) -> None:
    s = open_store(store_url)
    try:
        s.audit_add(NewAudit("U1", "freeze", env="production", reason="release day"))
    finally:
        s.close()
    for sql in ("UPDATE audit SET reason = 'nothing happened'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            raw_exec(store_url, sql)
    assert raw_rows(store_url, "SELECT reason FROM audit") == [("release day",)]


@pytest.mark.postgres
def test_postgres_refuses_truncate_of_audit(pg_db_url: str) -> None:
    open_store(pg_db_url).close()
    with pytest.raises(Exception, match="append-only"):
        raw_exec(pg_db_url, "TRUNCATE audit")


def test_freezes_start_end_and_lift(store: Store) -> None:
    f = store.freeze_add("production", "U1", "release", T0, T0 + timedelta(hours=2))
    forever = store.freeze_add("staging", "U2", "", T0, None)
    assert [x.id for x in store.freezes_active(T0 + timedelta(minutes=5))] == [f.id, forever.id]
    assert store.freezes_active(T0 - timedelta(seconds=1)) == []
    assert [x.env for x in store.freezes_active(T0 + timedelta(hours=2))] == ["staging"]  # ran out
    assert store.freeze_lift("production", "U3", T0 + timedelta(hours=3)) == []  # nothing in force
    lifted = store.freeze_lift("staging", "U3", T0 + timedelta(days=9))
    assert [x.id for x in lifted] == [forever.id] and lifted[0].lifted_by == "U3"
    assert store.freezes_active(T0 + timedelta(days=9)) == []
    assert [(r.action, r.actor, r.env) for r in store.audit_list()] == [
        ("freeze", "U1", "production"),
        ("freeze", "U2", "staging"),
        ("unfreeze", "U3", "staging"),
    ]


def test_one_lock_per_app_env_even_under_a_race(store_url: str) -> None:
    s = open_store(store_url)
    try:
        results = race(8, lambda i: s.lock_take("web", "production", f"U{i}", "mine", "", T0))
        winners = [lock for lock, took in results if took]
        assert len(winners) == 1
        assert {lock.holder for lock, _ in results} == {winners[0].holder}  # losers see the holder
        assert s.lock_get("web", "staging") is None
        assert s.lock_release("web", "production", "U9", T0) is not None
        assert s.lock_get("web", "production") is None
        assert s.lock_release("web", "production", "U9", T0) is None
        _, took = s.lock_take("web", "production", "U7", "", "", T0)
        assert took
        assert [r.action for r in s.audit_list()] == ["lock", "unlock", "lock"]
    finally:
        s.close()


def test_a_failed_request_gets_at_most_one_revert_claim(store_url: str) -> None:
    s = open_store(store_url)
    try:
        assert sum(race(8, lambda i: s.revert_claim("R5"))) == 1
        assert s.revert_of("R5") == ""
        s.revert_set("R5", "R9")
        s.revert_set("R5", "R10")  # set once; never re-pointed
        assert s.revert_of("R5") == "R9"
        assert s.is_revert("R9") and not s.is_revert("R5")
        assert s.revert_of("R6") is None
    finally:
        s.close()


# --------------------------------------------------------------------------------------------- numbering


def test_versions_may_leave_a_gap_but_must_rise() -> None:
    check_sequence((Migration(1, "a", ()), Migration(2, "b", ()), Migration(4, "d", ())))
    with pytest.raises(RuntimeError, match="expected more than 4"):
        check_sequence((Migration(4, "d", ()), Migration(3, "c", ())))


def test_a_lower_numbered_migration_landing_later_still_runs(tmp_path: Path) -> None:
    """Migration 4 (this branch) may reach a database before 3 (a parallel branch) exists; when 3
    arrives, the runner applies it even though the database is already at 4."""
    from opsbot.store.migrations.sqlite import MIGRATIONS

    first, second = MIGRATIONS[0], MIGRATIONS[1]
    four = next(m for m in MIGRATIONS if m.version == 4)
    three = Migration(3, "parallel branch", ("CREATE TABLE parallel_three (x INTEGER) STRICT",))

    class Early(SqliteStore):
        migrations = (first, second, four)

    class Later(SqliteStore):
        migrations = (first, second, three, four)

    path = tmp_path / "gap.db"
    Early(path).close()
    later = Later(path)
    try:
        assert later.migrate() == []  # applied at open: 3 only
    finally:
        later.close()
    url = f"sqlite:///{path}"
    assert [r[0] for r in raw_rows(url, "SELECT version FROM schema_version ORDER BY applied_at, version")] == [
        1, 2, 4, 3,
    ]  # fmt: skip
    assert raw_rows(url, "SELECT COUNT(*) FROM parallel_three") == [(0,)]
