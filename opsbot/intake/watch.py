"""Watch mode's reading of Flux, Argo CD and Cluster API objects: status -> deploy event.

Why apart from the watcher: the list/watch loop (`opsbot.kube.watcher`) is generic; what a status
means is the same question the webhook parsers answer, so it stays in intake.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from opsbot.core.model import DeployEvent, Outcome
from opsbot.intake.agents import (
    FluxRevision,
    PayloadError,
    argocd_outcome,
    flux_outcome,
    parse_flux_revision,
)

__all__ = ["event_from_object"]


class Kinded(Protocol):
    """A watched resource as far as translation cares: which kind of object it lists."""

    @property
    def kind(self) -> str: ...


# ------------------------------------------------------------------------------------ status -> event


def event_from_object(
    resource: Kinded, obj: Mapping[str, Any], *, now: datetime, cluster: str = ""
) -> DeployEvent | None:
    """What an object's status says about its deploy, or None while it says nothing yet.

    Conservative like the webhook parsers: an object whose controller has not yet observed the
    latest spec (`observedGeneration < generation`) is progressing, whatever its Ready says.
    """
    meta = _map(obj.get("metadata"))
    name, namespace = _str(meta.get("name")), _str(meta.get("namespace"))
    if not name:
        return None
    status = _map(obj.get("status"))
    if resource.kind == "Application":
        return _argo_event(name, namespace, status, now=now, cluster=cluster)
    if resource.kind == "Cluster":
        return _cluster_event(name, namespace, meta, status, now=now, cluster=cluster)
    return _flux_event(resource, name, namespace, meta, status, now=now, cluster=cluster)


def _flux_event(
    resource: Kinded,
    name: str,
    namespace: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    now: datetime,
    cluster: str,
) -> DeployEvent | None:
    ready = next(
        (c for c in _list(status.get("conditions")) if isinstance(c, dict) and c.get("type") == "Ready"), None
    )
    if ready is None:
        return None
    reason, message = _str(ready.get("reason")), _str(ready.get("message"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    stale = isinstance(generation, int) and isinstance(observed, int) and observed < generation
    state = _str(ready.get("status"))
    if state == "True" and not stale:
        outcome = Outcome.SUCCEEDED
    elif state == "False" and not stale:
        outcome = flux_outcome(reason, "error")
    else:
        outcome = Outcome.PROGRESSING

    if resource.kind == "HelmRelease":
        history = [h for h in _list(status.get("history")) if isinstance(h, dict)]
        applied = _str(history[0].get("chartVersion")) if history else ""
        attempted = _str(status.get("lastAttemptedRevision"))
        raw = applied if outcome is Outcome.SUCCEEDED and applied else attempted or applied
        revision = _safe_revision(raw)
    else:
        applied = _str(status.get("lastAppliedRevision"))
        attempted = _str(status.get("lastAttemptedRevision"))
        if outcome is Outcome.SUCCEEDED:
            revision = _safe_revision(applied)
            if not revision.sha:
                origin = _safe_revision(_str(status.get("lastAppliedOriginRevision")))
                revision = FluxRevision(revision.raw, sha=origin.sha, digest=revision.digest)
        else:
            revision = _safe_revision(attempted or applied)
    return DeployEvent(
        source="watch",
        kind=resource.kind,
        name=name,
        namespace=namespace,
        revision=revision.sha or revision.raw,
        outcome=outcome,
        reason=reason or state or "Unknown",
        message=message,
        at=_time(ready.get("lastTransitionTime")) or now,
        cluster=cluster,
    )


_ARGO_PHASES = frozenset({"Running", "Terminating", "Succeeded", "Failed", "Error"})
_ARGO_HEALTH = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})


def _argo_event(
    name: str, namespace: str, status: Mapping[str, Any], *, now: datetime, cluster: str
) -> DeployEvent | None:
    op = _map(status.get("operationState"))
    health = _map(status.get("health"))
    sync = _map(status.get("sync"))
    phase = _str(op.get("phase"))
    health_status = _str(health.get("status"))
    if not phase and not health_status:
        return None
    outcome, reason = argocd_outcome(
        phase if phase in _ARGO_PHASES else "", health_status if health_status in _ARGO_HEALTH else ""
    )
    finished = _time(op.get("finishedAt"))
    changed = _time(health.get("lastTransitionTime"))
    if outcome is Outcome.SUCCEEDED and finished and changed and changed < finished:
        # The catalog's on-deployed rule: Healthy from before the sync finished is the previous
        # rollout's health, not this one's.
        outcome = Outcome.PROGRESSING
    revision = (
        _str(_map(op.get("syncResult")).get("revision"))
        or _str(_map(_map(op.get("operation")).get("sync")).get("revision"))
        or _str(sync.get("revision"))
    )
    message = _str(op.get("message"))
    if outcome is Outcome.DEGRADED and _str(health.get("message")):
        message = _str(health.get("message"))
    return DeployEvent(
        source="watch",
        kind="Application",
        name=name,
        namespace=namespace,
        revision=revision.lower() if _is_sha1(revision) else revision,
        outcome=outcome,
        reason=reason,
        message=message,
        at=finished or changed or now,
        cluster=cluster,
    )


def _cluster_event(
    name: str,
    namespace: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    now: datetime,
    cluster: str,
) -> DeployEvent | None:
    """A Cluster API `Cluster`: succeeded once its Ready condition is True, progressing before.

    The revision is the object's uid, not a commit: a cluster deleted and created again under the
    same name is another object, so its Ready is a new event and not a redelivery of the old one.
    """
    ready = next(
        (c for c in _list(status.get("conditions")) if isinstance(c, dict) and c.get("type") == "Ready"), None
    )
    if ready is None:
        return None
    state = _str(ready.get("status"))
    return DeployEvent(
        source="watch",
        kind="Cluster",
        name=name,
        namespace=namespace,
        revision=_str(meta.get("uid")),
        outcome=Outcome.SUCCEEDED if state == "True" else Outcome.PROGRESSING,
        reason=_str(ready.get("reason")) or ("Ready" if state == "True" else state or "Unknown"),
        message=_str(ready.get("message")),
        at=_time(ready.get("lastTransitionTime")) or now,
        cluster=cluster,
    )


def _safe_revision(raw: str) -> FluxRevision:
    try:
        return parse_flux_revision(raw, field="status revision")
    except PayloadError:
        return FluxRevision(raw)


def _is_sha1(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdefABCDEF" for c in value)


def _time(value: object) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
