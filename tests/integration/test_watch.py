"""Watch mode against the Kubernetes API double: list/watch, bookmarks, 410, auth, leases, stop.

Run with `-p tests.plugins.kube` until the plugin is registered in tests/conftest.py. Timeouts
below are guards against a hang, never assertions about speed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from opsbot.core.model import DeployEvent, Outcome
from opsbot.errors import PermanentError
from opsbot.intake.agent_events import event_from_object
from opsbot.intake.watching import APPLICATIONS, HELMRELEASES, KUSTOMIZATIONS
from opsbot.kube.lease import LeaseElector
from opsbot.kube.live import live_status
from opsbot.kube.watcher import Backoff, ResourceWatcher, WatchAuthError, run_watchers
from tests.doubles.kube import APPLICATION, DEPLOYMENT, HELMRELEASE, KUSTOMIZATION, LEASE, KubeDouble
from tests.plugins.kube import KUBE_TOKEN, KubeClock

SHA_A = "4b8e2f1a9c0d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
SHA_B = "9f3c1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c"
SHA_C = "c0ffee5a1b2c3d4e5f60718293a4b5c6d7e8f901"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
GUARD = 10.0  # seconds before a wait gives up: a hang guard, not a speed requirement


# --------------------------------------------------------------------------------------------- objects


def kustomization(
    name: str = "apps",
    *,
    namespace: str = "flux-system",
    ready: str = "True",
    reason: str = "ReconciliationSucceeded",
    message: str | None = None,
    applied: str | None = SHA_A,
    attempted: str | None = None,
    generation: int = 1,
    observed: int = 1,
    changed_at: str = "2026-01-15T10:00:00Z",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    applied_rev = f"main@sha1:{applied}" if applied else None
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message if message is not None else f"Applied revision: {applied_rev}",
                "lastTransitionTime": changed_at,
                "observedGeneration": observed,
            }
        ],
    }
    if applied_rev:
        status["lastAppliedRevision"] = applied_rev
    status["lastAttemptedRevision"] = f"main@sha1:{attempted}" if attempted else applied_rev
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace, "generation": generation, "labels": labels or {}},
        "spec": {
            "interval": "10m",
            "path": "./apps/production",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        },
        "status": status,
    }


def helmrelease(*, ready: str, reason: str, message: str, chart: str, attempted: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "podinfo", "namespace": "production", "generation": 3},
        "spec": {"chart": {"spec": {"chart": "podinfo", "version": chart}}},
        "status": {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": "2026-01-15T11:04:09Z",
                },
            ],
            "history": [{"chartName": "podinfo", "chartVersion": chart, "status": "deployed", "version": 4}],
            "lastAttemptedRevision": attempted,
        },
    }


def application(
    *, phase: str, health: str, revision: str = SHA_B, health_changed: str = "2026-01-15T10:31:12Z"
) -> dict[str, Any]:
    return {
        "metadata": {"name": "guestbook", "namespace": "argocd", "generation": 7},
        "spec": {"project": "default", "destination": {"name": "in-cluster", "namespace": "guestbook"}},
        "status": {
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": health, "lastTransitionTime": health_changed},
            "operationState": {
                "phase": phase,
                "message": "successfully synced (all tasks run)",
                "syncResult": {"revision": revision},
                "startedAt": "2026-01-15T10:30:58Z",
                "finishedAt": "2026-01-15T10:31:01Z",
            },
        },
    }


# --------------------------------------------------------------------------------------------- harness


class Events:
    """Collects callback events from the watcher thread."""

    def __init__(self) -> None:
        self.q: queue.Queue[DeployEvent] = queue.Queue()
        self.all: list[DeployEvent] = []

    def __call__(self, event: DeployEvent) -> None:
        self.all.append(event)
        self.q.put(event)

    def next(self) -> DeployEvent:
        try:
            return self.q.get(timeout=GUARD)
        except queue.Empty:
            raise AssertionError(f"no deploy event arrived; got so far: {self.all}") from None

    def pending(self) -> list[DeployEvent]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


class RecordingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(initial=0.01, maximum=0.08, jitter=0.0)
        self.delays: list[float] = []

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay


@contextmanager
def running(watcher: ResourceWatcher) -> Iterator[threading.Event]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            watcher.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-watcher")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(GUARD)
        assert not thread.is_alive(), "the watcher did not stop"
    if errors:
        raise errors[0]


@pytest.fixture
def make_watcher(kube_api: client.ApiClient) -> Callable[..., tuple[ResourceWatcher, Events]]:
    def make(resource: Any = KUSTOMIZATIONS, **kwargs: Any) -> tuple[ResourceWatcher, Events]:
        events = Events()
        kwargs.setdefault("backoff", RecordingBackoff())
        kwargs.setdefault("clock", lambda: NOW)
        kwargs.setdefault("stop_poll_seconds", 0.05)
        kwargs.setdefault("translate", event_from_object)
        return ResourceWatcher(kwargs.pop("api", kube_api), resource, events, **kwargs), events

    return make


# --------------------------------------------------------------------------------------------- list / watch


def test_added_and_modified_objects_become_deploy_events(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    kube_double.apply(KUSTOMIZATION, kustomization())
    watcher, events = make_watcher(cluster="prod-eu")
    with running(watcher):
        first = events.next()  # from the initial list
        assert (first.source, first.kind, first.namespace, first.name) == (
            "watch",
            "Kustomization",
            "flux-system",
            "apps",
        )
        assert (first.revision, first.outcome, first.reason, first.cluster) == (
            SHA_A,
            Outcome.SUCCEEDED,
            "ReconciliationSucceeded",
            "prod-eu",
        )
        assert first.at == datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
        kube_double.wait_for_watches(KUSTOMIZATION, 1)

        kube_double.apply(
            KUSTOMIZATION,
            kustomization(
                ready="Unknown", reason="Progressing", message="Reconciliation in progress", attempted=SHA_B
            ),
        )
        progressing = events.next()
        assert (progressing.revision, progressing.outcome, progressing.reason) == (
            SHA_B,
            Outcome.PROGRESSING,
            "Progressing",
        )

        kube_double.apply(
            KUSTOMIZATION,
            kustomization(
                ready="False",
                reason="HealthCheckFailed",
                attempted=SHA_B,
                message="timeout waiting for: [Deployment/production/cache]",
            ),
        )
        failed = events.next()
        assert (failed.revision, failed.outcome, failed.reason) == (
            SHA_B,
            Outcome.FAILED,
            "HealthCheckFailed",
        )
        assert failed.message == "timeout waiting for: [Deployment/production/cache]"

        kube_double.apply(KUSTOMIZATION, kustomization(applied=SHA_B))
        live = events.next()
        assert (live.revision, live.outcome) == (SHA_B, Outcome.SUCCEEDED)

        # A metadata-only change (same deploy state) notifies nobody; the next real change does.
        kube_double.apply(KUSTOMIZATION, kustomization(applied=SHA_B, labels={"team": "web"}))
        kube_double.apply(KUSTOMIZATION, kustomization("infra", applied=SHA_C))
        added = events.next()
        assert (added.name, added.revision, added.outcome) == ("infra", SHA_C, Outcome.SUCCEEDED)
    assert events.pending() == []
    assert watcher.lists == 1


def test_helmreleases_and_applications_are_watched(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    hr_watcher, hr_events = make_watcher(HELMRELEASES)
    app_watcher, app_events = make_watcher(APPLICATIONS)
    with running(hr_watcher), running(app_watcher):
        kube_double.wait_for_watches(HELMRELEASE, 1)
        kube_double.wait_for_watches(APPLICATION, 1)
        kube_double.apply(
            HELMRELEASE,
            helmrelease(
                ready="True",
                reason="UpgradeSucceeded",
                chart="6.5.4",
                attempted="6.5.4",
                message="Helm upgrade succeeded for release production/podinfo.v4 with chart podinfo@6.5.4",
            ),
        )
        kube_double.apply(APPLICATION, application(phase="Succeeded", health="Healthy"))
        hr = hr_events.next()
        app = app_events.next()
    assert (hr.kind, hr.namespace, hr.name, hr.revision, hr.outcome, hr.reason) == (
        "HelmRelease",
        "production",
        "podinfo",
        "6.5.4",
        Outcome.SUCCEEDED,
        "UpgradeSucceeded",
    )
    assert (app.kind, app.namespace, app.name, app.revision, app.outcome) == (
        "Application",
        "argocd",
        "guestbook",
        SHA_B,
        Outcome.SUCCEEDED,
    )
    assert app.at == datetime(2026, 1, 15, 10, 31, 1, tzinfo=UTC)


def test_namespaced_watch_sees_only_its_namespace(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    kube_double.apply(KUSTOMIZATION, kustomization("other", namespace="team-b"))
    watcher, events = make_watcher(namespace="flux-system")
    with running(watcher):
        kube_double.wait_for_watches(KUSTOMIZATION, 1)
        kube_double.apply(KUSTOMIZATION, kustomization("elsewhere", namespace="team-b", applied=SHA_B))
        kube_double.apply(KUSTOMIZATION, kustomization("apps", applied=SHA_C))
        event = events.next()
    assert (event.namespace, event.name, event.revision) == ("flux-system", "apps", SHA_C)
    assert events.pending() == []
    assert all("/namespaces/flux-system/" in r.path for r in kube_double.calls("GET", KUSTOMIZATION))


def test_bookmarks_advance_the_resource_version_and_emit_nothing(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    kube_double.apply(KUSTOMIZATION, kustomization())
    watcher, events = make_watcher()
    with running(watcher):
        events.next()
        kube_double.wait_for_watches(KUSTOMIZATION, 1)
        (first_watch,) = kube_double.calls("GET", KUSTOMIZATION, watch=True)
        assert first_watch.query["allowWatchBookmarks"] == "true"
        assert first_watch.query["resourceVersion"] == str(kube_double.resource_version)

        rv = kube_double.bookmark(KUSTOMIZATION)
        wait_until(lambda: watcher.resource_version == str(rv), "the bookmark's resourceVersion")
        assert events.pending() == []  # the bookmark was handled and produced no event

        kube_double.end_watches()  # the next watch resumes from the bookmark, without a relist
        kube_double.wait_for_watches(KUSTOMIZATION, 2)
        second_watch = kube_double.calls("GET", KUSTOMIZATION, watch=True)[1]
        assert second_watch.query["resourceVersion"] == str(rv)
    assert watcher.lists == 1
    assert events.pending() == []


def test_gone_relists_and_emits_only_what_changed(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    kube_double.apply(KUSTOMIZATION, kustomization("apps", applied=SHA_A))
    kube_double.apply(KUSTOMIZATION, kustomization("infra", applied=SHA_A))
    kube_double.apply(KUSTOMIZATION, kustomization("old", applied=SHA_A))
    watcher, events = make_watcher()
    with running(watcher):
        initial = {events.next().name for _ in range(3)}
        assert initial == {"apps", "infra", "old"}
        kube_double.wait_for_watches(KUSTOMIZATION, 1)

        # The watcher is between two watches while the cluster moves on and history is compacted.
        kube_double.hold_watches()
        kube_double.end_watches()
        kube_double.wait_for(lambda: len(kube_double.calls("GET", KUSTOMIZATION, watch=True)) == 2)
        kube_double.apply(KUSTOMIZATION, kustomization("infra", applied=SHA_B))
        kube_double.delete(KUSTOMIZATION, "flux-system", "old")
        kube_double.compact()
        kube_double.release_watches()

        missed = events.next()  # from the relist: only the object that changed
        assert (missed.name, missed.revision) == ("infra", SHA_B)
        kube_double.wait_for_watches(KUSTOMIZATION, 3)
        assert watcher.lists == 2

        kube_double.apply(KUSTOMIZATION, kustomization("old", applied=SHA_A))  # re-created: news again
        recreated = events.next()
        assert (recreated.name, recreated.revision) == ("old", SHA_A)
    assert events.pending() == []
    assert [(e.name, e.revision) for e in events.all] == [
        ("apps", SHA_A),
        ("infra", SHA_A),
        ("old", SHA_A),
        ("infra", SHA_B),
        ("old", SHA_A),
    ]
    watch_calls = kube_double.calls("GET", KUSTOMIZATION, watch=True)
    assert watch_calls[1].status == 200  # the 410 arrives as an ERROR event in a 200 stream


def test_a_bad_token_fails_clearly(
    kube_double: KubeDouble,
    make_kube_client: Callable[..., client.ApiClient],
    make_watcher: Callable[..., tuple[ResourceWatcher, Events]],
) -> None:
    secret = "not-the-token-123"
    watcher, events = make_watcher(api=make_kube_client(secret))
    with pytest.raises(WatchAuthError) as info:
        watcher.run(threading.Event())
    message = str(info.value)
    assert "401 Unauthorized" in message
    assert "kustomizations.kustomize.toolkit.fluxcd.io" in message
    assert secret not in message
    assert isinstance(info.value, PermanentError)
    assert len(kube_double.calls("GET", KUSTOMIZATION)) == 1, "a refused token is not retried"
    assert events.all == []


def test_run_watchers_stops_all_and_raises_when_one_cannot_authenticate(
    make_kube_client: Callable[..., client.ApiClient],
    make_watcher: Callable[..., tuple[ResourceWatcher, Events]],
    kube_double: KubeDouble,
) -> None:
    good, _ = make_watcher(KUSTOMIZATIONS)
    bad, _ = make_watcher(HELMRELEASES, api=make_kube_client("wrong"))
    with pytest.raises(WatchAuthError, match="helmreleases"):
        run_watchers([good, bad], threading.Event())


def test_errors_back_off_and_recover(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    kube_double.apply(KUSTOMIZATION, kustomization())
    kube_double.fail_next(KUSTOMIZATION, 3, status=500)
    backoff = RecordingBackoff()
    watcher, events = make_watcher(backoff=backoff)
    with running(watcher):
        event = events.next()
    assert event.revision == SHA_A
    assert backoff.delays[:3] == [0.01, 0.02, 0.04]  # growing, bounded by `maximum`
    statuses = [r.status for r in kube_double.calls("GET", KUSTOMIZATION)]
    assert statuses[:4] == [500, 500, 500, 200]


def test_empty_watch_streams_back_off_instead_of_spinning(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    backoff = RecordingBackoff()
    watcher, _ = make_watcher(backoff=backoff, timeout_seconds=0)  # the server ends every watch at once
    with running(watcher):
        kube_double.wait_for_watches(KUSTOMIZATION, 5)
    watches = len(kube_double.calls("GET", KUSTOMIZATION, watch=True))
    assert len(backoff.delays) >= watches - 1
    assert backoff.delays[:4] == [0.01, 0.02, 0.04, 0.08]
    assert max(backoff.delays) == 0.08


def test_stop_ends_an_idle_watch_promptly(
    kube_double: KubeDouble, make_watcher: Callable[..., tuple[ResourceWatcher, Events]]
) -> None:
    """The server would keep this watch open for 30 minutes; setting stop must not wait for it."""
    watcher, _ = make_watcher(timeout_seconds=1800)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    kube_double.wait_for_watches(KUSTOMIZATION, 1)
    stop.set()
    thread.join(GUARD)
    assert not thread.is_alive()
    kube_double.wait_for(lambda: kube_double.open_watches(KUSTOMIZATION) == 0)


def test_a_failing_callback_does_not_stop_the_watch(
    kube_double: KubeDouble, kube_api: client.ApiClient
) -> None:
    seen: queue.Queue[DeployEvent] = queue.Queue()

    def flaky(event: DeployEvent) -> None:
        seen.put(event)
        if event.name == "boom":
            raise RuntimeError("consumer bug")

    kube_double.apply(KUSTOMIZATION, kustomization("boom"))
    watcher = ResourceWatcher(
        kube_api, KUSTOMIZATIONS, flaky, translate=event_from_object, backoff=RecordingBackoff(),
        stop_poll_seconds=0.05,
    )
    with running(watcher):
        assert seen.get(timeout=GUARD).name == "boom"
        kube_double.wait_for_watches(KUSTOMIZATION, 1)
        kube_double.apply(KUSTOMIZATION, kustomization("fine"))
        assert seen.get(timeout=GUARD).name == "fine"


# ------------------------------------------------------------------------------------ status -> event


def test_stale_generation_is_progressing_even_if_ready() -> None:
    event = event_from_object(KUSTOMIZATIONS, kustomization(generation=2, observed=1), now=NOW)
    assert event is not None and event.outcome is Outcome.PROGRESSING


def test_object_without_ready_condition_says_nothing() -> None:
    obj = kustomization()
    obj["status"] = {}
    assert event_from_object(KUSTOMIZATIONS, obj, now=NOW) is None
    assert (
        event_from_object(APPLICATIONS, {"metadata": {"name": "x", "namespace": "argocd"}}, now=NOW) is None
    )


def test_dependency_not_ready_is_progressing() -> None:
    obj = kustomization(ready="False", reason="DependencyNotReady", message="dependency 'infra' is not ready")
    event = event_from_object(KUSTOMIZATIONS, obj, now=NOW)
    assert event is not None and event.outcome is Outcome.PROGRESSING


def test_helmrelease_rollback_is_a_failure_of_the_attempted_chart() -> None:
    obj = helmrelease(
        ready="False",
        reason="RollbackSucceeded",
        chart="6.5.4",
        attempted="6.5.5",
        message="Helm rollback to previous release production/podinfo.v4 with chart podinfo@6.5.4 succeeded",
    )
    event = event_from_object(HELMRELEASES, obj, now=NOW)
    assert event is not None
    assert (event.outcome, event.revision) == (Outcome.FAILED, "6.5.5")


def test_argo_healthy_from_before_the_sync_is_not_yet_deployed() -> None:
    obj = application(phase="Succeeded", health="Healthy", health_changed="2026-01-15T09:00:00Z")
    event = event_from_object(APPLICATIONS, obj, now=NOW)
    assert event is not None and event.outcome is Outcome.PROGRESSING


def test_argo_degraded_and_failed() -> None:
    degraded = event_from_object(APPLICATIONS, application(phase="Succeeded", health="Degraded"), now=NOW)
    failed = event_from_object(APPLICATIONS, application(phase="Failed", health="Healthy"), now=NOW)
    assert degraded is not None and degraded.outcome is Outcome.DEGRADED
    assert failed is not None and (failed.outcome, failed.reason) == (Outcome.FAILED, "Failed")


def test_oci_kustomization_reports_the_origin_commit() -> None:
    obj = kustomization(applied=None)
    obj["status"]["lastAppliedRevision"] = "latest@sha256:" + "ab" * 32
    obj["status"]["lastAppliedOriginRevision"] = f"main@sha1:{SHA_C}"
    event = event_from_object(KUSTOMIZATIONS, obj, now=NOW)
    assert event is not None and event.revision == SHA_C


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from(
        ["True", "False", "Ready", "0001-01-01T00:00:00+14:00", f"main@sha1:{SHA_A}", "Degraded"]
    ),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    max_leaves=12,
)
_status_keys = st.sampled_from(
    ["conditions", "observedGeneration", "lastAppliedRevision", "lastAttemptedRevision", "history",
     "lastAppliedOriginRevision", "operationState", "health", "sync"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    resource=st.sampled_from([KUSTOMIZATIONS, HELMRELEASES, APPLICATIONS]),
    status=st.dictionaries(_status_keys, _json, max_size=5),
    ready=st.dictionaries(
        st.sampled_from(["type", "status", "reason", "message", "lastTransitionTime"]), _json
    ),
)
def test_any_status_shape_gives_an_event_or_none(
    resource: Any, status: dict[str, Any], ready: dict[str, Any]
) -> None:
    """Status comes from CRDs of many versions; an odd shape must not break the watch loop."""
    if isinstance(status.get("conditions"), list):
        status["conditions"].append({"type": "Ready", **ready})
    obj = {"metadata": {"name": "x", "namespace": "y", "generation": 2}, "status": status}
    event = event_from_object(resource, obj, now=NOW)
    assert event is None or isinstance(event.outcome, Outcome)


# ------------------------------------------------------------------------------------ leader election


def _elector(api: client.ApiClient, identity: str, clock: KubeClock, **kwargs: Any) -> LeaseElector:
    return LeaseElector(
        api, namespace="opsbot", name="opsbot-watch", identity=identity, clock=clock, **kwargs
    )


def test_one_of_two_electors_leads_and_the_other_takes_over_after_expiry(
    kube_double: KubeDouble, make_kube_client: Callable[..., client.ApiClient], kube_clock: KubeClock
) -> None:
    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    b = _elector(make_kube_client(), "opsbot-b", kube_clock)

    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    lease = kube_double.get(LEASE, "opsbot", "opsbot-watch")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseDurationSeconds"]) == ("opsbot-a", 15)
    # The clock sits on a whole second: MicroTime must still carry six digits (else 400).
    assert lease["spec"]["renewTime"] == "2026-01-15T10:00:00.000000Z"

    kube_clock.advance(10)
    assert a.try_acquire_or_renew() is True  # renewed
    kube_clock.advance(10)
    assert b.try_acquire_or_renew() is False, "20s after A's first write, but only 10s after its renewal"

    kube_clock.advance(16)  # A stopped renewing (crashed): its lease expires
    assert b.try_acquire_or_renew() is True
    assert a.try_acquire_or_renew() is False
    assert (a.is_leader, b.is_leader) == (False, True)
    lease = kube_double.get(LEASE, "opsbot", "opsbot-watch")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("opsbot-b", 1)


def test_racing_for_an_expired_lease_one_write_wins_the_other_gets_409(
    kube_double: KubeDouble,
    make_kube_client: Callable[..., client.ApiClient],
    kube_clock: KubeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    b = _elector(make_kube_client(), "opsbot-b", kube_clock)
    c = _elector(make_kube_client(), "opsbot-c", kube_clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    kube_clock.advance(20)

    real_read = c._read

    def read_then_lose_the_race() -> dict[str, Any]:
        stale = real_read()
        assert b.try_acquire_or_renew() is True  # B writes between C's read and C's write
        return stale

    monkeypatch.setattr(c, "_read", read_then_lose_the_race)
    puts_before = len([r for r in kube_double.requests if r.method == "PUT"])
    assert c.try_acquire_or_renew() is False
    puts = [r for r in kube_double.requests if r.method == "PUT"][puts_before:]
    assert [r.status for r in puts] == [200, 409]
    lease = kube_double.get(LEASE, "opsbot", "opsbot-watch")
    assert lease is not None and lease["spec"]["holderIdentity"] == "opsbot-b"


def test_release_hands_over_at_once(
    kube_double: KubeDouble, make_kube_client: Callable[..., client.ApiClient], kube_clock: KubeClock
) -> None:
    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    b = _elector(make_kube_client(), "opsbot-b", kube_clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader
    assert b.try_acquire_or_renew(), "an empty holder is free without waiting for expiry"


def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires(
    make_kube_client: Callable[..., client.ApiClient], kube_clock: KubeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    assert a.try_acquire_or_renew()

    def unavailable() -> dict[str, Any]:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(a, "_read", unavailable)
    kube_clock.advance(5)
    assert a.try_acquire_or_renew() is True, "a brief outage inside the renew deadline keeps the lead"
    kube_clock.advance(6)  # 11s since the last renewal > renew deadline (10s) < lease duration (15s)
    assert a.try_acquire_or_renew() is False
    assert not a.is_leader


def test_only_the_leader_runs_the_work_and_the_follower_takes_over_on_stop(
    make_kube_client: Callable[..., client.ApiClient], kube_clock: KubeClock
) -> None:
    started: queue.Queue[str] = queue.Queue()
    stopped: queue.Queue[str] = queue.Queue()

    def work_for(name: str) -> Callable[[threading.Event], None]:
        def work(child_stop: threading.Event) -> None:
            started.put(name)
            child_stop.wait()
            stopped.put(name)

        return work

    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    b = _elector(make_kube_client(), "opsbot-b", kube_clock)
    stop_a, stop_b = threading.Event(), threading.Event()
    ta = threading.Thread(target=a.run, args=(stop_a, work_for("a")), kwargs={"retry_period": 0.02})
    ta.start()
    assert started.get(timeout=GUARD) == "a"
    tb = threading.Thread(target=b.run, args=(stop_b, work_for("b")), kwargs={"retry_period": 0.02})
    tb.start()
    try:
        wait_until(lambda: b._observed is not None, "B to see A's lease")
        assert started.empty(), "B must not work while A holds the lease"
        stop_a.set()  # A shuts down: stops its work, then releases the lease
        ta.join(GUARD)
        assert stopped.get(timeout=GUARD) == "a"
        assert started.get(timeout=GUARD) == "b"
    finally:
        stop_a.set()
        stop_b.set()
        ta.join(GUARD)
        tb.join(GUARD)
    assert stopped.get(timeout=GUARD) == "b"
    assert not ta.is_alive() and not tb.is_alive()


def test_work_failure_is_raised_and_the_lease_released(
    kube_double: KubeDouble, make_kube_client: Callable[..., client.ApiClient], kube_clock: KubeClock
) -> None:
    def work(child_stop: threading.Event) -> None:
        raise WatchAuthError("the Kubernetes API refused opsbot's credentials (401 Unauthorized)")

    a = _elector(make_kube_client(), "opsbot-a", kube_clock)
    with pytest.raises(WatchAuthError):
        a.run(threading.Event(), work, retry_period=0.02)
    lease = kube_double.get(LEASE, "opsbot", "opsbot-watch")
    assert lease is not None and not lease["spec"].get("holderIdentity")


# --------------------------------------------------------------------------------------------- live status


def _deployment(ready: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "cache", "namespace": "production", "generation": 4},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "cache"}},
            "template": {
                "metadata": {"labels": {"app": "cache"}},
                "spec": {
                    "initContainers": [{"name": "migrate", "image": "ghcr.io/example/cache-migrate:2.1.0"}],
                    "containers": [
                        {"name": "cache", "image": "ghcr.io/example/cache:2.1.0"},
                        {"name": "exporter", "image": "ghcr.io/example/exporter:0.9.1"},
                    ],
                },
            },
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def test_live_status_reads_ready_replicas_and_images(
    kube_double: KubeDouble, kube_api: client.ApiClient
) -> None:
    kube_double.apply(DEPLOYMENT, _deployment(ready=2))
    status = live_status(kube_api, "production", "cache")
    assert status is not None
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (3, 2, 2)
    assert status.images == (
        "ghcr.io/example/cache-migrate:2.1.0",
        "ghcr.io/example/cache:2.1.0",
        "ghcr.io/example/exporter:0.9.1",
    )
    assert not status.rolled_out
    kube_double.apply(DEPLOYMENT, _deployment(ready=3))
    assert (s := live_status(kube_api, "production", "cache")) is not None and s.rolled_out


def test_live_status_of_a_missing_deployment_is_none(kube_api: client.ApiClient) -> None:
    assert live_status(kube_api, "production", "nope") is None


def test_live_status_with_a_bad_token_is_a_permanent_error(
    kube_double: KubeDouble, make_kube_client: Callable[..., client.ApiClient]
) -> None:
    kube_double.apply(DEPLOYMENT, _deployment(ready=3))
    with pytest.raises(PermanentError, match="401 Unauthorized"):
        live_status(make_kube_client("wrong"), "production", "cache")
    assert KUBE_TOKEN  # the double's real token is untouched by the failed call
