"""The one translation table from what Flux and Argo CD say to a deploy event's outcome.

Why one module: the webhook parsers (`opsbot.intake.agents`) and watch mode (objects read by
`opsbot.kube.watcher`) must give the same verdict for the same fact, or a deploy announced by one
road would be contradicted by the other. So the reason sets, the Argo CD phase and health sets, the
revision reading and the "succeeded only when" rules are declared here, once, and both roads call
them. Conservative throughout: an unknown reason or state is never a success.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opsbot.core.fields import as_list, as_map, as_str
from opsbot.core.model import DeployEvent, Outcome
from opsbot.errors import OpsbotError

__all__ = [
    "ARGO_HEALTH",
    "ARGO_PHASES",
    "ARGO_SYNC",
    "MAX_REVISION",
    "FluxRevision",
    "Kinded",
    "PayloadError",
    "argocd_outcome",
    "argocd_verdict",
    "event_from_object",
    "flux_outcome",
    "is_hex",
    "is_sha1",
    "parse_flux_revision",
    "quote",
    "type_name",
]


class PayloadError(OpsbotError):
    """An agent payload does not have the documented shape; the message names the field at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------------------------- revisions

#: `[<ref>@]<algo>:<hex>`: fluxcd/pkg/git Commit.String() and source-controller artifact revisions.
_FLUX_REVISION = re.compile(r"\A(?:(?P<ref>.*)@)?(?P<algo>sha1|sha256|sha384|sha512|blake3):(?P<hash>.*)\Z")
_DIGEST_HEX_LEN = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128, "blake3": 64}
_HEX = re.compile(r"\A[0-9a-fA-F]+\Z")
_SHA1 = re.compile(r"\A[0-9a-fA-F]{40}\Z")
MAX_REVISION = 1024


def is_hex(value: str) -> bool:
    return bool(_HEX.match(value))


def is_sha1(value: str) -> bool:
    """A full git SHA-1 in either case: the only revision correlation may match a merge commit on."""
    return bool(_SHA1.match(value))


@dataclass(frozen=True)
class FluxRevision:
    """A Flux revision string, split into what correlation needs.

    `sha` is a full git SHA-1 (lowercase) or "": an OCI or Bucket digest, or a Helm chart version,
    is kept in `raw` but never passed off as a commit.
    """

    raw: str
    sha: str = ""
    ref: str = ""
    digest: str = ""


def parse_flux_revision(value: object, *, field: str = "revision") -> FluxRevision:
    """Read `main@sha1:<sha>`, `refs/heads/main@sha1:<sha>`, `sha1:<sha>`, legacy `main/<sha>`,
    `latest@sha256:<digest>` or an opaque value such as a chart version (`6.5.4`).

    A value that claims a digest algorithm but carries a wrong-length or non-hex hash is refused:
    it is not something Flux sends, and guessing would risk a false "deployed".
    """
    if value is None:
        return FluxRevision("")
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be a string, got {type_name(value)}")
    raw = value.strip()
    if len(raw) > MAX_REVISION:
        raise PayloadError(f"bad {field}: longer than {MAX_REVISION} characters")
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise PayloadError(f"bad {field} {quote(raw)}: contains whitespace or control characters")
    if not raw:
        return FluxRevision("")
    m = _FLUX_REVISION.match(raw)
    if m:
        algo, digest_hex, ref = m.group("algo"), m.group("hash"), m.group("ref") or ""
        if len(digest_hex) != _DIGEST_HEX_LEN[algo] or not is_hex(digest_hex):
            raise PayloadError(
                f"bad {field} {quote(raw)}: the {algo} part must be {_DIGEST_HEX_LEN[algo]} hex digits"
            )
        if algo == "sha1":
            return FluxRevision(raw, sha=digest_hex.lower(), ref=ref)
        return FluxRevision(raw, ref=ref, digest=f"{algo}:{digest_hex.lower()}")
    if is_sha1(raw):
        return FluxRevision(raw, sha=raw.lower())
    ref, sep, last = raw.rpartition("/")
    if sep and ref and is_sha1(last):
        # Flux < 2.0 wrote `<branch>/<sha>` (the docs' examples still show it).
        return FluxRevision(raw, sha=last.lower(), ref=ref)
    return FluxRevision(raw)


# --------------------------------------------------------------------------------------------- outcomes

#: Reasons that mean "the desired state is live" (kustomize-controller Ready reason, helm-controller
#: Released/TestSuccess reasons, fluxcd/pkg/apis/meta generic reasons).
_FLUX_SUCCEEDED = frozenset(
    {
        "ReconciliationSucceeded",
        "Succeeded",
        "InstallSucceeded",
        "UpgradeSucceeded",
        "TestSucceeded",
        "NoDriftDetected",
    }
)
#: Reasons that mean "not there yet, no verdict": announcing either success or failure would lie.
_FLUX_PROGRESSING = frozenset(
    {"Progressing", "ProgressingWithRetry", "DependencyNotReady", "DriftDetected", "Suspended", "NewArtifact"}
)
#: Reasons that mean "this revision did not go live". A successful rollback or uninstall is the
#: remediation of a failed install/upgrade, so the requested change is not what runs.
_FLUX_FAILED = frozenset(
    {
        "ReconciliationFailed",
        "HealthCheckFailed",
        "HealthCheckCanceled",
        "BuildFailed",
        "ArtifactFailed",
        "PruneFailed",
        "ValidationFailed",
        "Failed",
        "InvalidPath",
        "InvalidURL",
        "InvalidCELExpression",
        "FeatureGateDisabled",
        "InstallFailed",
        "UpgradeFailed",
        "TestFailed",
        "RollbackSucceeded",
        "RollbackFailed",
        "UninstallSucceeded",
        "UninstallFailed",
        "InitFailed",
        "GetLastReleaseFailed",
        "RetriesExceeded",
    }
)


def flux_outcome(reason: str, severity: str) -> Outcome:
    """Map a Flux event (or Ready condition) reason and severity to an outcome.

    Severity `error` is never a success, whatever the reason says (kustomize-controller copies the
    *current* Ready reason onto the event, which can be stale). Unknown reasons fall back to the
    severity: error → failed, anything else → progressing, never succeeded.
    """
    if reason in _FLUX_FAILED:
        return Outcome.FAILED
    if reason in _FLUX_PROGRESSING:
        return Outcome.PROGRESSING
    if severity == "error":
        return Outcome.FAILED
    if reason in _FLUX_SUCCEEDED:
        return Outcome.SUCCEEDED
    return Outcome.PROGRESSING


#: Argo CD's operation phases (`operationState.phase`), health statuses and sync statuses. A value
#: outside them is not something this Argo CD version sends: the webhook refuses it, watch mode
#: reads it as "no verdict".
ARGO_PHASES = frozenset({"Running", "Terminating", "Succeeded", "Failed", "Error"})
ARGO_HEALTH = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
ARGO_SYNC = frozenset({"Synced", "OutOfSync", "Unknown"})


def argocd_outcome(phase: str, health: str) -> tuple[Outcome, str]:
    """Map an Application's operation phase and health to (outcome, reason).

    Succeeded means the sync finished *and* the app is Healthy, the same test as the catalog's
    `on-deployed` trigger; a finished sync with resources still starting is only progressing.
    """
    if phase in ("Failed", "Error"):
        return Outcome.FAILED, phase
    if health == "Degraded":
        return Outcome.DEGRADED, "Degraded"
    if phase == "Succeeded" and health == "Healthy":
        return Outcome.SUCCEEDED, "Succeeded"
    return Outcome.PROGRESSING, phase or health or "Unknown"


def argocd_verdict(
    phase: str,
    health: str,
    *,
    message: str,
    health_message: str,
    finished: datetime | None = None,
    health_changed: datetime | None = None,
) -> tuple[Outcome, str, str]:
    """(outcome, reason, message) of an Application, from the webhook's fields or the object's status.

    Healthy from before the sync finished (when both times are known) is the previous rollout's
    health, not this one's: the catalog's on-deployed rule. The operation message of a degraded
    app is usually "successfully synced"; the health message says what is actually wrong.
    """
    outcome, reason = argocd_outcome(
        phase if phase in ARGO_PHASES else "", health if health in ARGO_HEALTH else ""
    )
    if outcome is Outcome.SUCCEEDED and finished and health_changed and health_changed < finished:
        outcome = Outcome.PROGRESSING
    if outcome is Outcome.DEGRADED and health_message:
        message = health_message
    return outcome, reason, message


# ------------------------------------------------------------------------------------ status -> event


class Kinded(Protocol):
    """A watched resource as far as translation cares: which kind of object it lists."""

    @property
    def kind(self) -> str: ...


def event_from_object(
    resource: Kinded, obj: Mapping[str, Any], *, now: datetime, cluster: str = ""
) -> DeployEvent | None:
    """What an object's status says about its deploy, or None while it says nothing yet.

    Conservative like the webhook parsers: an object whose controller has not yet observed the
    latest spec (`observedGeneration < generation`) is progressing, whatever its Ready says.
    """
    meta = as_map(obj.get("metadata"))
    name, namespace = as_str(meta.get("name")), as_str(meta.get("namespace"))
    if not name:
        return None
    status = as_map(obj.get("status"))
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
    ready = _ready_condition(status)
    if ready is None:
        return None
    reason, message = as_str(ready.get("reason")), as_str(ready.get("message"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    stale = isinstance(generation, int) and isinstance(observed, int) and observed < generation
    state = as_str(ready.get("status"))
    if state == "True" and not stale:
        outcome = Outcome.SUCCEEDED
    elif state == "False" and not stale:
        outcome = flux_outcome(reason, "error")
    else:
        outcome = Outcome.PROGRESSING

    if resource.kind == "HelmRelease":
        history = [h for h in as_list(status.get("history")) if isinstance(h, dict)]
        applied = as_str(history[0].get("chartVersion")) if history else ""
        attempted = as_str(status.get("lastAttemptedRevision"))
        raw = applied if outcome is Outcome.SUCCEEDED and applied else attempted or applied
        revision = _safe_revision(raw)
    else:
        applied = as_str(status.get("lastAppliedRevision"))
        attempted = as_str(status.get("lastAttemptedRevision"))
        if outcome is Outcome.SUCCEEDED:
            revision = _safe_revision(applied)
            if not revision.sha:
                origin = _safe_revision(as_str(status.get("lastAppliedOriginRevision")))
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


def _argo_event(
    name: str, namespace: str, status: Mapping[str, Any], *, now: datetime, cluster: str
) -> DeployEvent | None:
    op = as_map(status.get("operationState"))
    health = as_map(status.get("health"))
    sync = as_map(status.get("sync"))
    phase = as_str(op.get("phase"))
    health_status = as_str(health.get("status"))
    if not phase and not health_status:
        return None
    finished = _time(op.get("finishedAt"))
    changed = _time(health.get("lastTransitionTime"))
    outcome, reason, message = argocd_verdict(
        phase,
        health_status,
        message=as_str(op.get("message")),
        health_message=as_str(health.get("message")),
        finished=finished,
        health_changed=changed,
    )
    revision = (
        as_str(as_map(op.get("syncResult")).get("revision"))
        or as_str(as_map(as_map(op.get("operation")).get("sync")).get("revision"))
        or as_str(sync.get("revision"))
    )
    return DeployEvent(
        source="watch",
        kind="Application",
        name=name,
        namespace=namespace,
        revision=revision.lower() if is_sha1(revision) else revision,
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
    ready = _ready_condition(status)
    if ready is None:
        return None
    state = as_str(ready.get("status"))
    return DeployEvent(
        source="watch",
        kind="Cluster",
        name=name,
        namespace=namespace,
        revision=as_str(meta.get("uid")),
        outcome=Outcome.SUCCEEDED if state == "True" else Outcome.PROGRESSING,
        reason=as_str(ready.get("reason")) or ("Ready" if state == "True" else state or "Unknown"),
        message=as_str(ready.get("message")),
        at=_time(ready.get("lastTransitionTime")) or now,
        cluster=cluster,
    )


def _ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `Ready` condition of a status (Flux and Cluster API both report through it), or None."""
    return next(
        (c for c in as_list(status.get("conditions")) if isinstance(c, dict) and c.get("type") == "Ready"), None
    )


def _safe_revision(raw: str) -> FluxRevision:
    try:
        return parse_flux_revision(raw, field="status revision")
    except PayloadError:
        return FluxRevision(raw)


def _time(value: object) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number" if not (isinstance(value, float) and math.isnan(value)) else "NaN"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def quote(value: str, limit: int = 80) -> str:
    """Quote a peer-supplied value for an error message, cut short so a message stays one line."""
    shown = value if len(value) <= limit else value[:limit] + "…"
    return repr(shown)
