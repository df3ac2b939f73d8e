"""What Flux and Argo CD tell us over HTTP, checked and turned into `DeployEvent`s.

Pure functions (no aiohttp, no I/O). What a reason, phase or revision *means* is decided in
`opsbot.intake.agent_events`, the table watch mode uses too; this module checks the payloads' shape
and authenticity and reads their fields. The parsers are strict on shape and lenient on content: a payload
that does not have the documented shape raises `PayloadError` with the exact field at fault (the
route answers 400 and processes nothing), while unknown reasons are mapped conservatively so that
opsbot never announces a success the agent did not report.

Shapes (sources in tests/fixtures/payloads/*/README.md):
- Flux notification-controller `generic` / `generic-hmac` provider: the `eventv1.Event` JSON
  (fluxcd/pkg/apis/event/v1beta1/event.go). Metadata keys arrive with the controller's API group
  prefix (`kustomize.toolkit.fluxcd.io/revision`) from notification-controller before v1.5, and
  without it (`revision`) from v1.5 on (RFC-0008 `combineEventMetadata`). Both are read.
- Argo CD notifications `webhook` service: the body is whatever our template renders, so the
  template shipped in deploy/gitops/argocd/ and `parse_argocd_event` are one contract.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opsbot.core.model import DeployEvent
from opsbot.intake.agent_events import (
    ARGO_HEALTH,
    ARGO_PHASES,
    ARGO_SYNC,
    MAX_REVISION,
    PayloadError,
    argocd_verdict,
    flux_outcome,
    is_hex,
    is_sha1,
    parse_flux_revision,
    quote,
    type_name,
)

__all__ = [
    "AgentEvent",
    "PayloadError",
    "UnsupportedEvent",
    "parse_argocd_event",
    "parse_flux_event",
    "verify_bearer",
    "verify_flux_signature",
]


class UnsupportedEvent(PayloadError):
    """A well-formed event about something that is not a deploy (a GitRepository, a Bucket, ...).

    Separate from `PayloadError` so the route can acknowledge it (202) instead of refusing it: an
    Alert that also subscribes sources is a reasonable configuration, not an attack.
    """


@dataclass(frozen=True)
class AgentEvent(DeployEvent):
    """A `DeployEvent` that also keeps the agent's revision string as it was sent.

    `revision` holds the git SHA when one could be found (what correlation with a merge commit
    needs); `raw_revision` keeps `main@sha1:…`, a chart version or an OCI digest for display and
    for audits, so nothing the agent said is lost when it is not a SHA.
    """

    raw_revision: str = ""


# --------------------------------------------------------------------------------------------- auth

#: HMAC algorithms a `generic-hmac` peer may name in `X-Signature: <algo>=<hex>`. The Provider
#: docs accept sha224/256/384/512 and the Receiver docs sha1/256/512; the default is sha256.
_HMAC_ALGORITHMS: dict[str, str] = {
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}


def verify_flux_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Check `X-Signature: <algo>=<hex>` over the raw body bytes, in constant time.

    An empty secret verifies nothing: an HMAC keyed with "" is computable by anyone, so a bot
    started without `FLUX_WEBHOOK_SECRET` must refuse every event rather than accept all of them.
    """
    if not secret or header is None:
        return False
    algo, sep, given = header.strip().partition("=")
    if not sep:
        return False
    digestmod = _HMAC_ALGORITHMS.get(algo.strip().lower())
    given = given.strip()
    if digestmod is None or not is_hex(given):
        return False
    expected = hmac.new(secret.encode("utf-8", "surrogatepass"), body, digestmod).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii"))


def verify_bearer(token: str, header: str | None) -> bool:
    """Check `Authorization: Bearer <token>` (Argo CD sends no signature, only this shared secret).

    Compared in constant time over bytes (so non-ASCII input cannot raise), and an unset token
    never matches, for the same reason as in `verify_flux_signature`.
    """
    if not token or header is None:
        return False
    scheme, sep, given = header.strip().partition(" ")
    if not sep or scheme.lower() != "bearer":
        return False
    # surrogatepass: aiohttp decodes raw header bytes with surrogateescape, so a hostile header
    # may carry lone surrogates; encoding must not raise on them.
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


# --------------------------------------------------------------------------------------------- flux

_FLUX_KINDS = {"Kustomization": "kustomize.toolkit.fluxcd.io", "HelmRelease": "helm.toolkit.fluxcd.io"}
_FLUX_SEVERITIES = frozenset({"info", "error", "trace"})
_MAX_TEXT = 64_000  # Flux caps messages at 39,000 characters; anything longer is not Flux


def parse_flux_event(payload: object, *, received_at: datetime) -> AgentEvent:
    """Turn a notification-controller event into a deploy event.

    The revision is looked up unprefixed first (notification-controller ≥ v1.5 strips the group),
    then with the involved object's API group prefix (older controllers). For HelmReleases the
    revision is the chart version; a git SHA is taken from `originRevision` or `commit` when the
    controller or an `event.toolkit.fluxcd.io/*` annotation supplied one. `received_at` stands in
    for the event time only when the controller sent none (a zero `metav1.Time` is `null`).
    """
    event = _require_object(payload, "flux event")
    missing = "involvedObject" not in event
    obj = _require_object(event.get("involvedObject"), "involvedObject", missing=missing)
    kind = _require_str(obj, "kind", where="involvedObject")
    name = _require_str(obj, "name", where="involvedObject")
    namespace = _require_str(obj, "namespace", where="involvedObject")
    _check_identifier(kind, "involvedObject.kind", _KIND)
    _check_identifier(name, "involvedObject.name", _K8S_NAME)
    _check_identifier(namespace, "involvedObject.namespace", _K8S_NAME)
    api_version = _optional_str(obj, "apiVersion", where="involvedObject")
    if kind not in _FLUX_KINDS:
        raise UnsupportedEvent(
            f"flux event for {kind} {namespace}/{name} is not a deploy"
            " (only Kustomization and HelmRelease are)"
        )
    group = api_version.split("/", 1)[0] if "/" in api_version else _FLUX_KINDS[kind]

    severity = _require_str(event, "severity", allow_empty=True)
    if severity not in _FLUX_SEVERITIES:
        raise PayloadError(f"severity must be one of info, error, trace; got {quote(severity)}")
    reason = _optional_str(event, "reason")
    message = _optional_str(event, "message")
    at = _parse_time(event.get("timestamp"), "timestamp", fallback=received_at)

    metadata = event.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise PayloadError(f"metadata must be an object of strings, got {type_name(metadata)}")

    def meta(key: str) -> object:
        for candidate in (key, f"{group}/{key}", f"event.toolkit.fluxcd.io/{key}"):
            if candidate in metadata:
                return metadata[candidate]
        return None

    revision = parse_flux_revision(meta("revision"), field="metadata revision")
    origin = parse_flux_revision(meta("originRevision"), field="metadata originRevision")
    commit = parse_flux_revision(meta("commit"), field="metadata commit")
    cluster = meta("cluster")
    if cluster is not None and not isinstance(cluster, str):
        raise PayloadError(f"metadata cluster must be a string, got {type_name(cluster)}")
    if cluster is not None:
        _check_text(cluster, "metadata cluster")

    sha = revision.sha or origin.sha or commit.sha
    return AgentEvent(
        source="flux",
        kind=kind,
        name=name,
        namespace=namespace,
        revision=sha or revision.raw or origin.raw,
        outcome=flux_outcome(reason, severity),
        reason=reason or severity,
        message=message,
        at=at,
        cluster=cluster or "",
        raw_revision=revision.raw or origin.raw,
    )


# --------------------------------------------------------------------------------------------- argo cd

#: What Go's text/template prints for a missing map key; our template renders it for Applications
#: that have no operationState yet, so it means "empty", not a value.
_NO_VALUE = "<no value>"


def parse_argocd_event(payload: object, *, received_at: datetime) -> AgentEvent:
    """Turn the body rendered by our `opsbot-event` template into a deploy event.

    `revision` (operationState.syncResult.revision, the SHA actually synced) wins over
    `syncRevision` (the target of the last comparison, which may already be a newer commit).
    `received_at` stands in for `finishedAt` when the Application has no finished operation.
    """
    body = _require_object(payload, "argocd event")
    app = _argo_str(body, "app")
    if not app:
        raise PayloadError("app must be a non-empty string (the Application's metadata.name)")
    _check_identifier(app, "app", _K8S_NAME)
    namespace = _argo_str(body, "namespace")
    if namespace:
        _check_identifier(namespace, "namespace", _K8S_NAME)
    phase = _argo_enum(body, "phase", ARGO_PHASES, "operation phase")
    health = _argo_enum(body, "healthStatus", ARGO_HEALTH, "health status")
    _argo_enum(body, "syncStatus", ARGO_SYNC, "sync status")
    message = _argo_str(body, "message")
    health_message = _argo_str(body, "healthMessage")
    cluster = _argo_str(body, "cluster")

    raw_revision = _argo_str(body, "revision") or _argo_str(body, "syncRevision")
    if len(raw_revision) > MAX_REVISION or any(c.isspace() or not c.isprintable() for c in raw_revision):
        raise PayloadError(f"bad revision {quote(raw_revision)}: not a git SHA or a chart version")
    sha = raw_revision.lower() if is_sha1(raw_revision) else ""

    at = _parse_time(_argo_str(body, "finishedAt") or None, "finishedAt", fallback=received_at)
    outcome, reason, message = argocd_verdict(phase, health, message=message, health_message=health_message)
    return AgentEvent(
        source="argocd",
        kind="Application",
        name=app,
        namespace=namespace,
        revision=sha or raw_revision,
        outcome=outcome,
        reason=reason,
        message=message,
        at=at,
        cluster=cluster,
        raw_revision=raw_revision,
    )


def _argo_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{key} must be a string, got {type_name(value)}")
    value = _check_text(value, key).strip()
    return "" if value == _NO_VALUE else value


def _argo_enum(body: Mapping[str, Any], key: str, allowed: frozenset[str], what: str) -> str:
    value = _argo_str(body, key)
    if value and value not in allowed:
        known = ", ".join(sorted(allowed))
        raise PayloadError(f"unknown {what} {quote(value)} in {key} (known: {known})")
    return value


# --------------------------------------------------------------------------------------------- helpers


#: Kubernetes object names (DNS subdomain) and kinds. Checking them keeps peer-chosen text that
#: opsbot echoes into Slack and logs to the characters Kubernetes itself allows.
_K8S_NAME = re.compile(r"\A[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?\Z")
_KIND = re.compile(r"\A[A-Za-z][A-Za-z0-9]{0,62}\Z")


def _check_identifier(value: str, label: str, pattern: re.Pattern[str]) -> None:
    if not pattern.match(value):
        raise PayloadError(f"{label} {quote(value)} is not a valid Kubernetes name")


def _check_text(value: str, label: str) -> str:
    """Refuse lone surrogates (JSON allows `\\ud800`): they cannot be stored, logged or posted."""
    if len(value) > _MAX_TEXT:
        raise PayloadError(f"{label} is longer than {_MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{label} is not valid Unicode text (lone surrogate)") from None
    return value


def _require_object(value: object, what: str, *, missing: bool = False) -> dict[str, Any]:
    if missing:
        raise PayloadError(f"{what} is missing")
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type_name(value)}")
    return value


def _require_str(obj: Mapping[str, Any], key: str, *, where: str = "", allow_empty: bool = False) -> str:
    label = f"{where}.{key}" if where else key
    if key not in obj:
        raise PayloadError(f"{label} is missing")
    value = obj[key]
    if not isinstance(value, str):
        raise PayloadError(f"{label} must be a string, got {type_name(value)}")
    _check_text(value, label)
    if not value and not allow_empty:
        raise PayloadError(f"{label} must not be empty")
    return value


def _optional_str(obj: Mapping[str, Any], key: str, *, where: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return ""
    label = f"{where}.{key}" if where else key
    if not isinstance(value, str):
        raise PayloadError(f"{label} must be a string, got {type_name(value)}")
    return _check_text(value, label)


def _parse_time(value: object, field: str, *, fallback: datetime) -> datetime:
    """RFC 3339 as Kubernetes writes it (`2022-10-28T07:26:19Z`); null means "not set"."""
    if value is None or value == "":
        return fallback
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be an RFC 3339 string, got {type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PayloadError(f"{field} {quote(value)} is not an RFC 3339 time") from None
