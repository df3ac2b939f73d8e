"""One suite for every Store backend: SQLite (a file in tmp_path) and a real PostgreSQL database.

Both backends must behave identically, so every test here runs against both; the few tests that
only make sense for one backend say so in their name.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from opsbot.core.model import TRANSITIONS, RequestState
from opsbot.core.ports import NewRequest, OpenRequestExists, Store
from opsbot.errors import ConfigError
from opsbot.store import open_store
from opsbot.store.migrations.postgres import MIGRATIONS as PG_MIGRATIONS
from opsbot.store.migrations.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

T = TypeVar("T")
S = RequestState
THREADS = 8
REPO_ROOT = Path(__file__).resolve().parents[2]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: open_store must create it.
        return f"sqlite:///{tmp_path}/state/opsbot.db"
    url: str = request.getfixturevalue("pg_db_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def new_request(n: int = 1, **overrides: Any) -> NewRequest:
    values: dict[str, Any] = {
        "intent_key": f"key{n}",
        "command": f"scale web {n} in production",
        "verb": "scale",
        "app": "web",
        "env": "production",
        "requester": "U_ALICE",
        "forge": "local",
        "branch": f"opsbot/scale-web-production-{n}",
        "base_branch": "main",
        "base_sha": "a" * 40,
        "title": f"Scale web to {n} replicas in production",
        "summary": "replicas 1 → 3",
        "fields": [{"app": "web", "env": "production", "field": "replicas", "old": "1", "new": str(n)}],
        "approvals_needed": 1,
        "channel": "C123",
        "thread_ts": "1700000000.000100",
    }
    values.update(overrides)
    return NewRequest(**values)


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) in n threads released together by a barrier; re-raise any thread's error."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait(timeout=60)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(go, i) for i in range(n)]
        return [f.result(timeout=300) for f in futures]


def raw_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Read the database behind the store's back, to check what was really committed."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite://") :])
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pconn:
        return list(pconn.execute(sql).fetchall())


def raw_exec(url: str, sql: str) -> None:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite://") :])
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pconn:
        pconn.execute(sql)


def path_to(store: Store, state: RequestState, n: int) -> str:
    """A fresh request driven to `state` along allowed moves; returns its id."""
    paths = {
        S.PROPOSED: [],
        S.APPROVED: [S.APPROVED],
        S.MERGED: [S.MERGED],
        S.FAILED: [S.MERGED, S.FAILED],
        S.DEPLOYED: [S.MERGED, S.DEPLOYED],
        S.CLOSED: [S.CLOSED],
        S.SUPERSEDED: [S.SUPERSEDED],
    }
    req = store.create_request(new_request(n))
    for step in paths[state]:
        assert store.transition(req.id, step, "setup") is not None
    return req.id


# --------------------------------------------------------------------------------------------- requests


def test_create_and_get(store: Store) -> None:
    req = store.create_request(new_request(3))
    assert req.id == "R1"
    assert req.state is S.PROPOSED
    assert (req.intent_key, req.app, req.env, req.requester) == ("key3", "web", "production", "U_ALICE")
    assert req.fields == [{"app": "web", "env": "production", "field": "replicas", "old": "1", "new": "3"}]
    assert req.summary == "replicas 1 → 3"
    assert req.approvals_needed == 1
    assert (req.channel, req.thread_ts) == ("C123", "1700000000.000100")
    assert req.pr_number is None and req.merged_at is None and req.deployed_at is None
    assert is_utc(req.created_at) and is_utc(req.updated_at)

    got = store.get_request("R1")
    assert got == req
    for typed in ("r1", "1", " R1 ", "#R1", "R01"):
        assert store.get_request(typed) == req, typed
    for bad in ("", "R", "R0", "R-1", "x1", "R1x", "R99", "R" + "9" * 30):
        assert store.get_request(bad) is None, bad

    second = store.create_request(new_request(4))
    assert second.id == "R2"

    [first] = store.transitions("R1")
    assert (first.request_id, first.from_state, first.to_state, first.actor) == (
        "R1",
        None,
        S.PROPOSED,
        "U_ALICE",
    )
    assert is_utc(first.at)


def test_find_open_request(store: Store) -> None:
    assert store.find_open_request("key1") is None
    first = store.create_request(new_request(1))
    assert store.find_open_request("key1") == first
    store.transition(first.id, S.APPROVED, "U_BOB")
    found = store.find_open_request("key1")
    assert found is not None and found.id == first.id and found.state is S.APPROVED
    store.transition(first.id, S.CLOSED, "U_ALICE")
    assert store.find_open_request("key1") is None
    again = store.create_request(new_request(1))
    assert store.find_open_request("key1") == again
    assert store.find_open_request("key2") is None


def test_find_by_pr_and_branch(store: Store) -> None:
    a = store.create_request(new_request(1))
    b = store.create_request(new_request(2, forge="github"))
    store.update_request(a.id, pr_number=42, pr_url="http://forge/pr/42")
    store.update_request(b.id, pr_number=42)
    by_pr = store.find_request_by_pr("local", 42)
    assert by_pr is not None and by_pr.id == a.id and by_pr.pr_url == "http://forge/pr/42"
    gh = store.find_request_by_pr("github", 42)
    assert gh is not None and gh.id == b.id
    assert store.find_request_by_pr("local", 43) is None

    assert store.find_request_by_branch("opsbot/scale-web-production-2") == gh
    assert store.find_request_by_branch("nope") is None
    # The same branch reused later (after a close) resolves to the newest request.
    store.transition(a.id, S.CLOSED, "U_ALICE")
    c = store.create_request(new_request(1))
    newest = store.find_request_by_branch("opsbot/scale-web-production-1")
    assert newest is not None and newest.id == c.id


def test_list_requests_filters_newest_first(store: Store) -> None:
    ids = []
    for n, (app, env) in enumerate(
        [("web", "dev"), ("web", "production"), ("api", "production"), ("web", "dev")]
    ):
        ids.append(store.create_request(new_request(n, app=app, env=env)).id)
    store.transition(ids[1], S.MERGED, "U_BOB")

    assert [r.id for r in store.list_requests()] == ids[::-1]
    assert [r.id for r in store.list_requests(limit=2)] == ids[::-1][:2]
    assert [r.id for r in store.list_requests(app="web")] == [ids[3], ids[1], ids[0]]
    assert [r.id for r in store.list_requests(app="web", env="dev")] == [ids[3], ids[0]]
    assert [r.id for r in store.list_requests(env="production")] == [ids[2], ids[1]]
    assert [r.id for r in store.list_requests(states=[S.MERGED])] == [ids[1]]
    assert [r.id for r in store.list_requests(states=[S.PROPOSED, S.APPROVED], env="production")] == [ids[2]]
    assert store.list_requests(states=[]) == []
    assert store.list_requests(app="nope") == []


def test_update_request(store: Store) -> None:
    req = store.create_request(new_request(1))
    when = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone_plus_two())
    updated = store.update_request(
        req.id,
        pr_number=7,
        pr_url="https://github.com/o/r/pull/7",
        head_sha="b" * 40,
        thread_ts=None,
        fields=[{"field": "image", "new": "ghcr.io/x:2"}],
        merged_at=when,
    )
    assert updated.state is S.PROPOSED
    assert (updated.pr_number, updated.head_sha, updated.thread_ts) == (7, "b" * 40, "")
    assert updated.fields == [{"field": "image", "new": "ghcr.io/x:2"}]
    assert updated.merged_at == when and is_utc(updated.merged_at)
    assert updated.updated_at >= req.updated_at
    assert store.get_request(req.id) == updated
    # update_request is not audited as a transition
    assert len(store.transitions(req.id)) == 1

    with pytest.raises(ValueError, match="transition"):
        store.update_request(req.id, state=S.MERGED)
    with pytest.raises(ValueError, match="unknown"):
        store.update_request(req.id, colour="blue")
    with pytest.raises(ValueError, match="unknown"):
        store.update_request(req.id, id="R9")
    with pytest.raises(TypeError):
        store.update_request(req.id, pr_number="7")
    with pytest.raises(ValueError, match="naive"):
        store.update_request(req.id, merged_at=datetime(2030, 1, 1))
    with pytest.raises(KeyError):
        store.update_request("R999", pr_number=1)
    assert store.get_request(req.id) == updated


def timezone_plus_two() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


# --------------------------------------------------------------------------------------------- transitions


def test_transition_happy_path_is_audited(store: Store) -> None:
    req = store.create_request(new_request(1))
    approved = store.transition(req.id, S.APPROVED, "U_BOB", "approved in Slack")
    assert approved is not None and approved.state is S.APPROVED
    merged = store.transition("r1", S.MERGED, "U_BOB", merge_sha="c" * 40, pr_number=12)
    assert merged is not None and merged.state is S.MERGED
    assert merged.merge_sha == "c" * 40 and merged.pr_number == 12
    assert is_utc(merged.merged_at) and merged.deployed_at is None
    deployed = store.transition("1", S.DEPLOYED, "flux", "Kustomization apps applied")
    assert deployed is not None and deployed.state is S.DEPLOYED and is_utc(deployed.deployed_at)
    assert deployed.merged_at == merged.merged_at

    trail = store.transitions(req.id)
    assert [(t.from_state, t.to_state, t.actor, t.detail) for t in trail] == [
        (None, S.PROPOSED, "U_ALICE", ""),
        (S.PROPOSED, S.APPROVED, "U_BOB", "approved in Slack"),
        (S.APPROVED, S.MERGED, "U_BOB", ""),
        (S.MERGED, S.DEPLOYED, "flux", "Kustomization apps applied"),
    ]
    assert all(t.request_id == "R1" and is_utc(t.at) for t in trail)
    assert [t.at for t in trail] == sorted(t.at for t in trail)

    # final is final
    for target in S:
        assert store.transition(req.id, target, "U_MALLORY") is None
    assert len(store.transitions(req.id)) == 4
    assert store.get_request(req.id) == deployed


def test_transition_matrix_matches_model(store: Store) -> None:
    for n, (current, target) in enumerate(itertools.product(S, S), start=1):
        rid = path_to(store, current, n)
        before = store.get_request(rid)
        trail_before = store.transitions(rid)
        result = store.transition(rid, target, "U_X", "matrix")
        if target in TRANSITIONS[current]:
            assert result is not None, (current, target)
            assert result.state is target
            trail = store.transitions(rid)
            assert len(trail) == len(trail_before) + 1
            assert (trail[-1].from_state, trail[-1].to_state, trail[-1].actor) == (current, target, "U_X")
        else:
            assert result is None, (current, target)
            assert store.get_request(rid) == before, "a refused move must change nothing"
            assert store.transitions(rid) == trail_before, "a refused move must record nothing"


def test_transition_keeps_explicit_times_and_rejects_bad_fields(store: Store) -> None:
    req = store.create_request(new_request(1))
    merged_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    with pytest.raises(ValueError):
        store.transition(req.id, S.MERGED, "U_BOB", state="deployed")
    with pytest.raises(ValueError):
        store.transition(req.id, S.MERGED, "U_BOB", bogus=1)
    assert store.get_request(req.id) == req and len(store.transitions(req.id)) == 1

    merged = store.transition(req.id, S.MERGED, "github:bob", merged_at=merged_at)
    assert merged is not None and merged.merged_at == merged_at
    failed = store.transition(req.id, S.FAILED, "argocd", "Degraded")
    assert failed is not None and failed.deployed_at is None
    # failed -> deployed: a later sync of the same revision succeeded
    again = store.transition(req.id, S.DEPLOYED, "argocd")
    assert again is not None and again.state is S.DEPLOYED

    assert store.transition("R404", S.APPROVED, "U_BOB") is None
    assert store.transition("garbage", S.APPROVED, "U_BOB") is None


# --------------------------------------------------------------------------------------------- approvals


def test_approvals(store: Store) -> None:
    req = store.create_request(new_request(1))
    assert store.approvals(req.id) == []
    assert store.add_approval(req.id, "U_BOB", "chat") is True
    assert store.add_approval(req.id, "U_BOB", "chat") is False
    assert store.add_approval("r1", "U_BOB", "github") is False
    assert store.add_approval(req.id, "U_CAROL", "github") is True
    approvals = store.approvals(req.id)
    assert sorted((a.request_id, a.approver, a.source) for a in approvals) == [
        ("R1", "U_BOB", "chat"),
        ("R1", "U_CAROL", "github"),
    ]
    assert all(is_utc(a.at) for a in approvals)
    other = store.create_request(new_request(2))
    assert store.approvals(other.id) == []
    with pytest.raises(KeyError):
        store.add_approval("R404", "U_BOB", "chat")


# --------------------------------------------------------------------------------------------- inbox


def test_inbox_dedup_and_pending(store: Store) -> None:
    payload = {"event": "push", "nested": {"list": [1, 2.5, None, True], "text": "naïve ✅"}}
    assert store.inbox_add("github", "delivery-1", payload) is True
    assert store.inbox_add("github", "delivery-1", {"other": 1}) is False
    assert store.inbox_add("flux", "delivery-1", {"x": 1}) is True  # keys are per source
    assert store.inbox_add("github", "delivery-2", {"n": 2}) is True

    pending = store.inbox_pending()
    assert [(i.source, i.key) for i in pending] == [
        ("github", "delivery-1"),
        ("flux", "delivery-1"),
        ("github", "delivery-2"),
    ]
    assert pending[0].payload == payload
    assert all(is_utc(i.received_at) for i in pending)
    assert len(store.inbox_pending(limit=2)) == 2

    store.inbox_done(pending[0].id)
    store.inbox_done(pending[0].id)  # harmless twice
    store.inbox_done(999_999)  # and for an unknown id
    assert [i.key for i in store.inbox_pending()] == ["delivery-1", "delivery-2"]
    assert [i.source for i in store.inbox_pending()] == ["flux", "github"]
    # done items still deduplicate: a redelivery after processing is not processed again
    assert store.inbox_add("github", "delivery-1", payload) is False


# --------------------------------------------------------------------------------------------- outbox


def test_outbox_dedup_due_retry_done(store: Store) -> None:
    now = datetime.now(UTC)
    assert store.outbox_add("post:R1:merged", "chat.postMessage", {"channel": "C1", "text": "🔀"}) is True
    assert store.outbox_add("post:R1:merged", "chat.postMessage", {"channel": "C1", "text": "again"}) is False
    assert store.outbox_add("post:R1:deployed", "chat.postMessage", {"channel": "C1", "text": "🚀"}) is True
    assert store.outbox_add("update:R1", "chat.update", {"ts": "1.2"}) is True

    due = store.outbox_due(now + timedelta(seconds=1))
    assert [i.key for i in due] == ["post:R1:merged", "post:R1:deployed", "update:R1"]
    first = due[0]
    assert (first.kind, first.payload, first.attempts) == (
        "chat.postMessage",
        {"channel": "C1", "text": "🔀"},
        0,
    )
    assert is_utc(first.next_at)
    assert len(store.outbox_due(now + timedelta(seconds=1), limit=1)) == 1
    assert store.outbox_due(now - timedelta(hours=1)) == []

    # retry pushes an item back; due order follows next_at, not insertion
    store.outbox_retry(first.id, now + timedelta(seconds=30), "ratelimited: Retry-After 30")
    store.outbox_retry(due[1].id, now + timedelta(seconds=10), "HTTP 503")
    soon = store.outbox_due(now + timedelta(seconds=1))
    assert [i.key for i in soon] == ["update:R1"]
    later = store.outbox_due(now + timedelta(minutes=1))
    assert [i.key for i in later] == ["update:R1", "post:R1:deployed", "post:R1:merged"]
    retried = {i.key: i for i in later}
    assert retried["post:R1:merged"].attempts == 1
    assert retried["post:R1:merged"].next_at == now + timedelta(seconds=30)
    store.outbox_retry(first.id, now + timedelta(seconds=40), "x" * 10_000)
    bumped = {i.key: i for i in store.outbox_due(now + timedelta(minutes=1))}
    assert bumped["post:R1:merged"].attempts == 2

    assert store.outbox_result("post:R1:merged") is None
    store.outbox_done(first.id, {"ts": "1700000000.1", "channel": "C1"})
    assert store.outbox_result("post:R1:merged") == {"ts": "1700000000.1", "channel": "C1"}
    store.outbox_done(first.id, {"ts": "other"})  # done is final: the first result stays
    assert store.outbox_result("post:R1:merged") == {"ts": "1700000000.1", "channel": "C1"}
    store.outbox_retry(first.id, now, "late retry after done")  # ignored
    store.outbox_done(due[2].id)
    assert store.outbox_result("update:R1") == {}
    assert store.outbox_result("never-queued") is None
    assert [i.key for i in store.outbox_due(now + timedelta(days=1))] == ["post:R1:deployed"]
    # never post twice: a done key cannot be queued again
    assert store.outbox_add("post:R1:merged", "chat.postMessage", {}) is False

    with pytest.raises(ValueError, match="naive"):
        store.outbox_due(datetime.now())  # naive on purpose


# --------------------------------------------------------------------------------------------- kv, ping


def test_kv_and_ping(store: Store) -> None:
    assert store.kv_get("mirror:fetched_at") is None
    store.kv_set("mirror:fetched_at", "2030-01-01T00:00:00Z")
    assert store.kv_get("mirror:fetched_at") == "2030-01-01T00:00:00Z"
    store.kv_set("mirror:fetched_at", "later")
    assert store.kv_get("mirror:fetched_at") == "later"
    store.kv_set("empty", "")
    assert store.kv_get("empty") == ""
    assert store.ping() is True


def test_ping_false_after_close(store_url: str) -> None:
    s = open_store(store_url)
    s.close()
    assert s.ping() is False
    s.close()  # idempotent


# --------------------------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_racing_same_transition_has_one_winner(store_url: str, shared: bool) -> None:
    """Double clicks (one store) and two replicas on one webhook (separate stores): one merge only."""
    main = open_store(store_url)
    stores = [main] * THREADS if shared else [open_store(store_url) for _ in range(THREADS)]
    try:
        req = main.create_request(new_request(1))
        results = race(
            THREADS, lambda i: stores[i].transition(req.id, S.MERGED, f"U{i}", merge_sha=f"{i}" * 40)
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        final = main.get_request(req.id)
        assert final is not None and final.state is S.MERGED and final.merge_sha == winners[0].merge_sha
        trail = main.transitions(req.id)
        assert [t.to_state for t in trail] == [S.PROPOSED, S.MERGED]

        # the same race on approvals and on outbox/inbox keys
        added = race(THREADS, lambda i: stores[i].add_approval(req.id, "U_BOB", "chat"))
        assert added.count(True) == 1
        queued = race(THREADS, lambda i: stores[i].outbox_add("post:R1:merged", "chat.postMessage", {"i": i}))
        assert queued.count(True) == 1
        received = race(THREADS, lambda i: stores[i].inbox_add("github", "delivery-1", {"i": i}))
        assert received.count(True) == 1
    finally:
        for s in {id(s): s for s in stores}.values():
            s.close()


@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_parallel_work_on_different_requests_loses_nothing(store_url: str, shared: bool) -> None:
    per_thread = 6
    main = open_store(store_url)
    stores = [main] * THREADS if shared else [open_store(store_url) for _ in range(THREADS)]

    def work(i: int) -> list[str]:
        s = stores[i]
        ids = []
        for j in range(per_thread):
            n = i * 100 + j
            req = s.create_request(new_request(n))
            assert s.add_approval(req.id, f"U_REVIEWER{i}", "chat")
            assert s.transition(req.id, S.APPROVED, f"U_REVIEWER{i}") is not None
            assert s.transition(req.id, S.MERGED, "github", merge_sha=f"{n:040d}") is not None
            assert s.outbox_add(f"post:{req.id}:merged", "chat.postMessage", {"n": n})
            assert s.inbox_add("flux", f"event-{n}", {"n": n})
            s.kv_set(f"thread:{req.id}", str(n))
            ids.append(req.id)
        return ids

    try:
        all_ids = [rid for ids in race(THREADS, work) for rid in ids]
        assert len(all_ids) == len(set(all_ids)) == THREADS * per_thread
        listed = main.list_requests(limit=1000)
        assert sorted(r.id for r in listed) == sorted(all_ids)
        assert all(r.state is S.MERGED for r in listed)
        for r in listed:
            assert [t.to_state for t in main.transitions(r.id)] == [S.PROPOSED, S.APPROVED, S.MERGED]
            assert len(main.approvals(r.id)) == 1
            assert main.kv_get(f"thread:{r.id}") is not None
        far = datetime.now(UTC) + timedelta(days=1)
        assert len(main.outbox_due(far, limit=1000)) == THREADS * per_thread
        assert len(main.inbox_pending(limit=1000)) == THREADS * per_thread
        # ids come from one sequence: R1..Rn with no gaps, newest first in listings
        numbers = sorted(int(rid[1:]) for rid in all_ids)
        assert numbers == list(range(1, THREADS * per_thread + 1))
        assert [r.id for r in listed] == [f"R{n}" for n in reversed(numbers)]
    finally:
        for s in {id(s): s for s in stores}.values():
            s.close()


# --------------------------------------------------------------------------------------------- durability


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from opsbot.core.model import RequestState
    from opsbot.core.ports import NewRequest
    from opsbot.store import open_store

    s = open_store(sys.argv[1])
    r = s.create_request(NewRequest(
        intent_key="k", command="scale web 3 in production", verb="scale", app="web", env="production",
        requester="U_ALICE", forge="local", branch="b", base_branch="main", base_sha="a" * 40,
        title="t", summary="s", fields=[{"replicas": 3}],
    ))
    s.transition(r.id, RequestState.MERGED, "U_BOB", merge_sha="m" * 40)
    s.outbox_add("post:merged", "chat.postMessage", {"text": "merged"})
    s.inbox_add("github", "delivery-1", {"action": "closed"})
    s.kv_set("k", "v")
    print(r.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no flush: a crash
    """
)


def test_committed_before_return_survives_a_crash(store_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, store_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rid = proc.stdout.strip()
    assert rid == "R1"

    s = open_store(store_url)
    try:
        req = s.get_request(rid)
        assert req is not None and req.state is S.MERGED and req.merge_sha == "m" * 40
        assert [t.to_state for t in s.transitions(rid)] == [S.PROPOSED, S.MERGED]
        assert [i.key for i in s.outbox_due(datetime.now(UTC) + timedelta(seconds=1))] == ["post:merged"]
        assert [i.key for i in s.inbox_pending()] == ["delivery-1"]
        assert s.kv_get("k") == "v"
        # and dedup still holds after the crash: nothing is posted or processed twice
        assert s.outbox_add("post:merged", "chat.postMessage", {}) is False
        assert s.inbox_add("github", "delivery-1", {}) is False
    finally:
        s.close()


def test_sqlite_second_store_object_sees_committed_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/opsbot.db"
    first = open_store(url)
    req = first.create_request(new_request(1))
    first.transition(req.id, S.APPROVED, "U_BOB")
    first.outbox_add("post:1", "chat.postMessage", {"x": 1})
    second = open_store(url)  # first is still open: no close() needed to see its commits
    try:
        got = second.get_request(req.id)
        assert got is not None and got.state is S.APPROVED
        assert second.outbox_result("post:1") is None
        assert len(second.outbox_due(datetime.now(UTC) + timedelta(seconds=1))) == 1
        assert raw_rows(url, "PRAGMA journal_mode") == [("wal",)]
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------------------------- migrations


def test_migrations_twice_are_a_noop(store_url: str) -> None:
    migrations = SQLITE_MIGRATIONS if store_url.startswith("sqlite") else PG_MIGRATIONS
    s = open_store(store_url)
    req = s.create_request(new_request(1))
    assert s.migrate() == []  # type: ignore[attr-defined]
    assert s.migrate() == []  # type: ignore[attr-defined]
    assert s.schema_version() == migrations[-1].version  # type: ignore[attr-defined]
    s.close()

    again = open_store(store_url)
    try:
        assert again.get_request(req.id) == req
        assert again.create_request(new_request(2)).id == "R2"
    finally:
        again.close()
    rows = raw_rows(store_url, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in migrations]


def test_concurrent_first_start_migrates_once(store_url: str) -> None:
    """Two bot processes starting together on an empty database: both come up, schema applied once."""
    stores = race(4, lambda i: open_store(store_url))
    try:
        assert all(s.ping() for s in stores)
        rows = raw_rows(store_url, "SELECT version FROM schema_version ORDER BY version")
        migrations = SQLITE_MIGRATIONS if store_url.startswith("sqlite") else PG_MIGRATIONS
        assert [r[0] for r in rows] == [m.version for m in migrations]
        assert stores[0].create_request(new_request(1)).id == "R1"
    finally:
        for s in stores:
            s.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    raw_exec(
        store_url,
        "INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', '2099-01-01')",
    )
    with pytest.raises(ConfigError, match="newer"):
        open_store(store_url)


# --------------------------------------------------------------------------------------------- open_store


def test_open_store_urls(tmp_path: Path) -> None:
    mem = open_store("sqlite:///:memory:")
    try:
        assert mem.create_request(new_request(1)).id == "R1"
        assert mem.ping()
    finally:
        mem.close()

    nested = tmp_path / "a" / "b" / "c.db"
    s = open_store(f"SQLITE:///{nested}")
    s.close()
    assert nested.exists()

    for bad, words in [
        ("mysql://db/opsbot", "unsupported"),
        ("redis://:s3cret@host/0", "unsupported"),
        ("/var/lib/opsbot.db", "no scheme"),
        ("", "no scheme"),
        ("sqlite://relative.db", "absolute"),
        ("sqlite:///", "absolute"),
    ]:
        with pytest.raises(ConfigError, match=words) as info:
            open_store(bad)
        assert "s3cret" not in str(info.value)


@pytest.mark.postgres
def test_postgres_password_never_logged(pg_db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    parts = urlsplit(pg_db_url)
    assert parts.hostname is not None
    host = f"{parts.hostname}:{parts.port}"
    with_password = urlunsplit((parts.scheme, f"postgres:hunter2-secret@{host}", parts.path, "", ""))
    caplog.set_level(logging.DEBUG, logger="opsbot")
    s = open_store(with_password)  # trust auth ignores the password; the URL still carries it
    try:
        assert s.ping()
    finally:
        s.close()
    assert "hunter2" not in caplog.text
    assert "postgres:***@" in caplog.text

    # an unreachable server: clear error, still no password
    dead_port = _closed_port()
    dead = urlunsplit(
        (parts.scheme, f"postgres:hunter2-secret@127.0.0.1:{dead_port}", "/x", "connect_timeout=2", "")
    )
    with pytest.raises(ConfigError, match="cannot connect") as info:
        open_store(dead)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in caplog.text


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_store_satisfies_protocol(tmp_path: Path) -> None:
    """Static check for mypy users, runtime check of the attribute surface for everyone else."""
    s: Store = open_store(f"sqlite:///{tmp_path}/p.db")
    try:
        for name in Store.__dict__:
            if not name.startswith("_"):
                assert callable(getattr(s, name)), name
    finally:
        s.close()


def test_outbox_claims_let_one_worker_post_each_item(store: Store) -> None:
    """Two replicas over one database: every due item goes to exactly one of them until its lease ends."""
    for i in range(6):
        assert store.outbox_add(f"k{i}", "thread_reply", {"i": i})
    now = datetime.now(UTC)
    a = store.outbox_claim(now, "replica-a", 30, limit=4)
    b = store.outbox_claim(now, "replica-b", 30, limit=10)
    assert len(a) == 4 and len(b) == 2
    assert {x.key for x in a}.isdisjoint({x.key for x in b})
    assert store.outbox_claim(now, "replica-c", 30) == []  # everything is claimed by a live replica
    # replica-a dies without finishing: after its lease, replica-b may take its items
    later = now + timedelta(seconds=31)
    store.outbox_done(b[0].id, {"ts": "1"})
    taken = store.outbox_claim(later, "replica-b", 30)
    assert {x.key for x in taken} == {x.key for x in a} | {b[1].key}


# --------------------------------------------------------------------------------------------- uniqueness


def test_one_open_request_per_intent_whichever_replica_asks(store_url: str) -> None:
    """Four store objects (four replicas) insert the same intent at once: one wins, three are told who."""
    open_store(store_url).close()  # migrate once, outside the race
    stores = [open_store(store_url) for _ in range(4)]

    def create(i: int) -> str:
        try:
            return "created " + stores[i].create_request(new_request(1)).id
        except OpenRequestExists as taken:
            return "exists " + taken.existing.id

    try:
        outcomes = sorted(race(4, create))
        # (PostgreSQL may hand the winner a later number: a losing insert still draws one)
        winner = outcomes[0].removeprefix("created ")
        assert outcomes == [f"created {winner}"] + [f"exists {winner}"] * 3
        # a closed request frees the intent; approved still holds it
        stores[0].transition(winner, S.APPROVED, "U_BOB")
        with pytest.raises(OpenRequestExists):
            stores[1].create_request(new_request(1))
        stores[0].transition(winner, S.CLOSED, "U_ALICE")
        again = stores[2].create_request(new_request(1))
        other = stores[3].create_request(new_request(2))  # another intent is another request
        assert len({winner, again.id, other.id}) == 3
        assert [r.id for r in stores[0].list_requests(states=[S.PROPOSED])] == [other.id, again.id]
    finally:
        for s in stores:
            s.close()


def test_one_thread_root_claim_per_request(store_url: str) -> None:
    open_store(store_url).close()
    stores = [open_store(store_url) for _ in range(4)]
    try:
        rid = stores[0].create_request(new_request(1, thread_ts="")).id
        won = race(4, lambda i: stores[i].claim_thread(rid, f"replica-{i}"))
        assert sorted(won) == [False, False, False, True]
        assert stores[0].claim_thread(rid, "replica-9") is False
        # a request made inside a thread already has its place: nobody posts another root
        threaded = stores[0].create_request(new_request(2, thread_ts="1700000000.000200")).id
        assert stores[1].claim_thread(threaded, "replica-1") is False
    finally:
        for s in stores:
            s.close()


def test_schema_3_supersedes_duplicates_left_by_older_versions(store_url: str) -> None:
    """Databases written before the rule may hold two open requests for one intent: the newest stays."""
    if store_url.startswith("sqlite"):
        from opsbot.store.sqlite import SqliteStore

        class OldSqlite(SqliteStore):
            migrations = SQLITE_MIGRATIONS[:2]

        old: Any = OldSqlite(store_url[len("sqlite://") :])
    else:
        from opsbot.store.postgres import PostgresStore

        class OldPostgres(PostgresStore):
            migrations = PG_MIGRATIONS[:2]

        old = OldPostgres(store_url)
    try:
        assert old.schema_version() == 2
    finally:
        old.close()
    for n, state in ((1, "approved"), (2, "proposed")):  # as the old code wrote them, racing itself
        raw_exec(
            store_url,
            "INSERT INTO requests (id, intent_key, command, verb, requester, state, created_at, updated_at) "
            f"VALUES ({n}, 'key1', 'scale web 1 in production', 'scale', 'U_ALICE', '{state}', "
            "'2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')",
        )
    first, second = "R1", "R2"
    s = open_store(store_url)
    try:
        older, newer = s.get_request(first), s.get_request(second)
        assert older is not None and newer is not None
        assert (older.state, newer.state) == (S.SUPERSEDED, S.PROPOSED)
        last = s.transitions(first)[-1]
        assert (last.from_state, last.to_state, last.actor) == (S.APPROVED, S.SUPERSEDED, "opsbot")
        assert s.find_open_request("key1") == newer
    finally:
        s.close()


def test_approvals_remember_head_and_effect_and_clear(store: Store) -> None:
    req = store.create_request(new_request(1))
    effect = [("web", "production", "replicas", "1", "3")]
    assert store.add_approval(req.id, "U_BOB", "chat", head_sha="h" * 40, effect=effect)
    (approval,) = store.approvals(req.id)
    assert (approval.head_sha, approval.effect) == ("h" * 40, (("web", "production", "replicas", "1", "3"),))
    assert store.clear_approvals(req.id) == 1
    assert store.approvals(req.id) == []
    assert store.add_approval(req.id, "U_BOB", "chat", head_sha="i" * 40)  # may approve again after a clear
