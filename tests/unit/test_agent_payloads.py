"""Flux and Argo CD payloads: signatures, parsing into DeployEvents, refusals, and fuzzing."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsbot.core.model import DeployEvent, Outcome
from opsbot.errors import OpsbotError
from opsbot.intake.agent_events import (
    ARGO_HEALTH,
    ARGO_PHASES,
    FluxRevision,
    PayloadError,
    argocd_outcome,
    event_from_object,
    flux_outcome,
    parse_flux_revision,
)
from opsbot.intake.agents import (
    AgentEvent,
    UnsupportedEvent,
    parse_argocd_event,
    parse_flux_event,
    verify_bearer,
    verify_flux_signature,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
RECEIVED = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
SHA_OK = "4b8e2f1a9c0d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
SHA_HC = "9f3c1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c"


def load(agent: str, name: str) -> Any:
    return json.loads((FIXTURES / agent / f"{name}.json").read_text())


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------------------------- fixtures

#: file -> (kind, namespace, name, revision, raw_revision, outcome, reason, at, cluster)
FLUX_EXPECTED: dict[str, tuple[str, str, str, str, str, Outcome, str, datetime, str]] = {
    "kustomization-succeeded": (
        "Kustomization", "flux-system", "apps", SHA_OK, f"main@sha1:{SHA_OK}",
        Outcome.SUCCEEDED, "ReconciliationSucceeded", t("2026-01-15T10:21:33Z"), "prod-eu",
    ),
    "kustomization-progressing": (
        "Kustomization", "flux-system", "apps", SHA_OK, f"refs/heads/main@sha1:{SHA_OK}",
        Outcome.PROGRESSING, "Progressing", t("2026-01-15T10:21:31Z"), "",
    ),
    "kustomization-health-check-failed-prefixed": (
        "Kustomization", "flux-system", "apps", SHA_HC, f"main@sha1:{SHA_HC}",
        Outcome.FAILED, "HealthCheckFailed", t("2024-06-03T14:02:11Z"), "",
    ),
    "kustomization-health-check-failed-unprefixed": (
        "Kustomization", "flux-system", "apps", SHA_HC, f"main@sha1:{SHA_HC}",
        Outcome.FAILED, "HealthCheckFailed", t("2026-01-15T10:27:40Z"), "prod-eu",
    ),
    "kustomization-validation-failed-legacy": (
        "Kustomization", "apps", "webapp", "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        "main/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        Outcome.FAILED, "ValidationFailed", t("2022-10-28T07:26:19Z"), "",
    ),
    "helmrelease-upgrade-succeeded": (
        "HelmRelease", "production", "podinfo", "6.5.4", "6.5.4",
        Outcome.SUCCEEDED, "UpgradeSucceeded", t("2026-01-15T11:04:09Z"), "prod-eu",
    ),
    "helmrelease-upgrade-failed": (
        "HelmRelease", "production", "podinfo", "6.5.5", "6.5.5",
        Outcome.FAILED, "UpgradeFailed", t("2024-09-12T08:45:51Z"), "",
    ),
}  # fmt: skip

ARGO_EXPECTED: dict[str, tuple[str, Outcome, str, datetime, str]] = {
    "app-deployed": (
        "5b1c3a7e9d2f4c6a8b0e1d3f5a7c9e2b4d6f8a0c", Outcome.SUCCEEDED, "Succeeded",
        t("2026-01-15T10:31:01Z"), "successfully synced (all tasks run)",
    ),
    "app-sync-failed": (
        "c0ffee5a1b2c3d4e5f60718293a4b5c6d7e8f901", Outcome.FAILED, "Failed", t("2026-01-15T10:40:04Z"),
        'one or more objects failed to apply, reason: Deployment.apps "guestbook-ui" is invalid:'
        " spec.template.spec.containers[0].image: Required value",
    ),
    "app-health-degraded": (
        "5b1c3a7e9d2f4c6a8b0e1d3f5a7c9e2b4d6f8a0c", Outcome.DEGRADED, "Degraded", t("2026-01-15T10:31:01Z"),
        'Deployment "guestbook-ui" exceeded its progress deadline',
    ),
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    assert {p.stem for p in (FIXTURES / "flux").glob("*.json")} == set(FLUX_EXPECTED)
    assert {p.stem for p in (FIXTURES / "argocd").glob("*.json")} == set(ARGO_EXPECTED)
    assert (FIXTURES / "flux" / "README.md").is_file() and (FIXTURES / "argocd" / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(FLUX_EXPECTED))
def test_flux_fixture_parses(name: str) -> None:
    payload = load("flux", name)
    kind, namespace, obj_name, revision, raw, outcome, reason, at, cluster = FLUX_EXPECTED[name]
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert isinstance(event, DeployEvent) and isinstance(event, AgentEvent)
    assert event == AgentEvent(
        source="flux",
        kind=kind,
        name=obj_name,
        namespace=namespace,
        revision=revision,
        outcome=outcome,
        reason=reason,
        message=payload["message"],
        at=at,
        cluster=cluster,
        raw_revision=raw,
    )


@pytest.mark.parametrize("name", sorted(ARGO_EXPECTED))
def test_argocd_fixture_parses(name: str) -> None:
    revision, outcome, reason, at, message = ARGO_EXPECTED[name]
    event = parse_argocd_event(load("argocd", name), received_at=RECEIVED)
    assert event == AgentEvent(
        source="argocd",
        kind="Application",
        name="guestbook",
        namespace="argocd",
        revision=revision,
        outcome=outcome,
        reason=reason,
        message=message,
        at=at,
        cluster="in-cluster",
        raw_revision=revision,
    )


def test_both_flux_metadata_forms_give_the_same_event() -> None:
    prefixed = parse_flux_event(
        load("flux", "kustomization-health-check-failed-prefixed"), received_at=RECEIVED
    )
    unprefixed = parse_flux_event(
        load("flux", "kustomization-health-check-failed-unprefixed"), received_at=RECEIVED
    )
    same = ("kind", "name", "namespace", "revision", "outcome", "reason", "message", "raw_revision")
    assert [getattr(prefixed, f) for f in same] == [getattr(unprefixed, f) for f in same]
    assert prefixed.dedup_key() == unprefixed.dedup_key()


def test_unprefixed_key_wins_over_prefixed_when_both_are_present() -> None:
    """notification-controller ≥ v1.5 strips the prefix; a stray prefixed copy must not win."""
    payload = load("flux", "kustomization-succeeded")
    payload["metadata"]["kustomize.toolkit.fluxcd.io/revision"] = f"main@sha1:{SHA_HC}"
    assert parse_flux_event(payload, received_at=RECEIVED).revision == SHA_OK


def test_helmrelease_takes_the_git_sha_from_origin_revision() -> None:
    payload = load("flux", "helmrelease-upgrade-succeeded")
    payload["metadata"]["originRevision"] = f"main@sha1:{SHA_OK}"
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert (event.revision, event.raw_revision) == (SHA_OK, "6.5.4")


def test_helmrelease_takes_the_git_sha_from_a_prefixed_origin_revision() -> None:
    payload = load("flux", "helmrelease-upgrade-failed")
    payload["metadata"]["helm.toolkit.fluxcd.io/originRevision"] = f"sha1:{SHA_HC}"
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert (event.revision, event.raw_revision, event.outcome) == (SHA_HC, "6.5.5", Outcome.FAILED)


def test_helmrelease_commit_annotation_metadata_is_read() -> None:
    payload = load("flux", "helmrelease-upgrade-succeeded")
    payload["metadata"]["commit"] = SHA_HC
    assert parse_flux_event(payload, received_at=RECEIVED).revision == SHA_HC


def test_oci_kustomization_uses_origin_revision_and_keeps_the_digest() -> None:
    digest = "sha256:" + "ab" * 32
    payload = load("flux", "kustomization-succeeded")
    payload["metadata"] = {"revision": f"latest@{digest}", "originRevision": f"main@sha1:{SHA_OK}"}
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert (event.revision, event.raw_revision) == (SHA_OK, f"latest@{digest}")


def test_oci_kustomization_without_origin_keeps_the_digest_as_revision() -> None:
    payload = load("flux", "kustomization-succeeded")
    payload["metadata"] = {"revision": "latest@sha256:" + "cd" * 32}
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert event.revision == event.raw_revision == "latest@sha256:" + "cd" * 32


def test_two_chart_versions_with_the_same_reason_are_two_events() -> None:
    first = load("flux", "helmrelease-upgrade-succeeded")
    second = copy.deepcopy(first)
    second["metadata"]["revision"] = "6.5.5"
    a = parse_flux_event(first, received_at=RECEIVED)
    b = parse_flux_event(second, received_at=RECEIVED)
    assert a.dedup_key() != b.dedup_key()


def test_flux_event_without_metadata_or_timestamp() -> None:
    payload = load("flux", "kustomization-progressing")
    del payload["metadata"]
    payload["timestamp"] = None
    event = parse_flux_event(payload, received_at=RECEIVED)
    assert (event.revision, event.raw_revision, event.at) == ("", "", RECEIVED)


def test_flux_timestamp_with_offset_is_normalised_to_utc() -> None:
    payload = load("flux", "kustomization-succeeded")
    payload["timestamp"] = "2026-01-15T11:21:33.5+01:00"
    assert parse_flux_event(payload, received_at=RECEIVED).at == datetime(
        2026, 1, 15, 10, 21, 33, 500000, UTC
    )


def test_source_events_are_acknowledged_not_parsed() -> None:
    payload = load("flux", "kustomization-succeeded")
    payload["involvedObject"].update(kind="GitRepository", apiVersion="source.toolkit.fluxcd.io/v1")
    payload["reason"] = "NewArtifact"
    with pytest.raises(UnsupportedEvent, match="GitRepository flux-system/apps is not a deploy") as info:
        parse_flux_event(payload, received_at=RECEIVED)
    assert isinstance(info.value, PayloadError)


def test_argocd_helm_chart_revision_is_kept_but_not_a_sha() -> None:
    body = load("argocd", "app-deployed")
    body["revision"] = "1.4.2"
    event = parse_argocd_event(body, received_at=RECEIVED)
    assert (event.revision, event.raw_revision) == ("1.4.2", "1.4.2")


def test_argocd_no_value_fields_mean_empty() -> None:
    body = load("argocd", "app-deployed")
    body.update(phase="<no value>", revision="<no value>", finishedAt="<no value>", cluster="<no value>")
    event = parse_argocd_event(body, received_at=RECEIVED)
    assert event.outcome is Outcome.PROGRESSING
    assert (event.revision, event.at, event.cluster) == (body["syncRevision"], RECEIVED, "")


# --------------------------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("reason", "severity", "outcome"),
    [
        ("ReconciliationSucceeded", "info", Outcome.SUCCEEDED),
        ("ReconciliationSucceeded", "error", Outcome.FAILED),
        ("Progressing", "info", Outcome.PROGRESSING),
        ("ProgressingWithRetry", "info", Outcome.PROGRESSING),
        ("DependencyNotReady", "info", Outcome.PROGRESSING),
        ("DependencyNotReady", "error", Outcome.PROGRESSING),
        ("ReconciliationFailed", "error", Outcome.FAILED),
        ("HealthCheckFailed", "error", Outcome.FAILED),
        ("BuildFailed", "error", Outcome.FAILED),
        ("ArtifactFailed", "error", Outcome.FAILED),
        ("PruneFailed", "error", Outcome.FAILED),
        ("InstallSucceeded", "info", Outcome.SUCCEEDED),
        ("UpgradeSucceeded", "info", Outcome.SUCCEEDED),
        ("TestSucceeded", "info", Outcome.SUCCEEDED),
        ("InstallFailed", "error", Outcome.FAILED),
        ("UpgradeFailed", "error", Outcome.FAILED),
        ("TestFailed", "error", Outcome.FAILED),
        ("RollbackSucceeded", "info", Outcome.FAILED),
        ("RollbackFailed", "error", Outcome.FAILED),
        ("UninstallSucceeded", "info", Outcome.FAILED),
        ("SomethingNew", "info", Outcome.PROGRESSING),
        ("SomethingNew", "error", Outcome.FAILED),
        ("", "info", Outcome.PROGRESSING),
    ],
)
def test_flux_outcome(reason: str, severity: str, outcome: Outcome) -> None:
    assert flux_outcome(reason, severity) is outcome


@pytest.mark.parametrize(
    ("phase", "health", "outcome", "reason"),
    [
        ("Succeeded", "Healthy", Outcome.SUCCEEDED, "Succeeded"),
        ("Succeeded", "Progressing", Outcome.PROGRESSING, "Succeeded"),
        ("Failed", "Healthy", Outcome.FAILED, "Failed"),
        ("Error", "Degraded", Outcome.FAILED, "Error"),
        ("Succeeded", "Degraded", Outcome.DEGRADED, "Degraded"),
        ("", "Degraded", Outcome.DEGRADED, "Degraded"),
        ("Running", "Healthy", Outcome.PROGRESSING, "Running"),
        ("", "Progressing", Outcome.PROGRESSING, "Progressing"),
        ("", "", Outcome.PROGRESSING, "Unknown"),
    ],
)
def test_argocd_outcome(phase: str, health: str, outcome: Outcome, reason: str) -> None:
    assert argocd_outcome(phase, health) == (outcome, reason)


# --------------------------------------------------------------------------------------------- revisions


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"main@sha1:{SHA_OK}", FluxRevision(f"main@sha1:{SHA_OK}", sha=SHA_OK, ref="main")),
        (
            f"refs/heads/main@sha1:{SHA_OK}",
            FluxRevision(f"refs/heads/main@sha1:{SHA_OK}", sha=SHA_OK, ref="refs/heads/main"),
        ),
        (f"v1.0.1@sha1:{SHA_OK}", FluxRevision(f"v1.0.1@sha1:{SHA_OK}", sha=SHA_OK, ref="v1.0.1")),
        (f"sha1:{SHA_OK}", FluxRevision(f"sha1:{SHA_OK}", sha=SHA_OK)),
        (f"main/{SHA_OK}", FluxRevision(f"main/{SHA_OK}", sha=SHA_OK, ref="main")),
        (f"feature/a/{SHA_OK}", FluxRevision(f"feature/a/{SHA_OK}", sha=SHA_OK, ref="feature/a")),
        (SHA_OK, FluxRevision(SHA_OK, sha=SHA_OK)),
        (f"main@sha1:{SHA_OK.upper()}", FluxRevision(f"main@sha1:{SHA_OK.upper()}", sha=SHA_OK, ref="main")),
        (
            "latest@sha256:" + "ab" * 32,
            FluxRevision("latest@sha256:" + "ab" * 32, ref="latest", digest="sha256:" + "ab" * 32),
        ),
        ("sha256:" + "ab" * 32, FluxRevision("sha256:" + "ab" * 32, digest="sha256:" + "ab" * 32)),
        ("6.5.4", FluxRevision("6.5.4")),
        ("0.1.0+4b8e2f1a9c0d", FluxRevision("0.1.0+4b8e2f1a9c0d")),
        (f"main/{SHA_OK[:12]}", FluxRevision(f"main/{SHA_OK[:12]}")),
        ("", FluxRevision("")),
        (None, FluxRevision("")),
    ],
)
def test_parse_flux_revision(raw: str | None, expected: FluxRevision) -> None:
    assert parse_flux_revision(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("main@sha1:xyz", "bad revision 'main@sha1:xyz': the sha1 part must be 40 hex digits"),
        (f"main@sha1:{SHA_OK}00", "the sha1 part must be 40 hex digits"),
        ("latest@sha256:abc", "the sha256 part must be 64 hex digits"),
        ("sha1:", "the sha1 part must be 40 hex digits"),
        (f"main @sha1:{SHA_OK}", "contains whitespace or control characters"),
        ("main\x00", "contains whitespace or control characters"),
        (12, "revision must be a string, got a number"),
        (["main"], "revision must be a string, got an array"),
        ("x" * 2000, "longer than 1024 characters"),
    ],
)
def test_bad_flux_revision(raw: object, message: str) -> None:
    with pytest.raises(PayloadError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_flux_revision(raw)


# --------------------------------------------------------------------------------------------- signatures

BODY = (FIXTURES / "flux" / "kustomization-succeeded.json").read_bytes()
SECRET = "s3cr3t-hmac-key"


def sign(algo: str, body: bytes = BODY, key: str = SECRET) -> str:
    return f"{algo}=" + hmac.new(key.encode(), body, getattr(hashlib, algo)).hexdigest()


@pytest.mark.parametrize("algo", ["sha256", "sha1", "sha224", "sha384", "sha512"])
def test_flux_signature_good(algo: str) -> None:
    assert verify_flux_signature(SECRET, BODY, sign(algo))


def test_flux_signature_is_over_raw_bytes_not_reserialised_json() -> None:
    compact = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert compact != BODY
    assert not verify_flux_signature(SECRET, compact, sign("sha256"))
    assert verify_flux_signature(SECRET, compact, sign("sha256", compact))


def test_flux_signature_tolerates_uppercase_hex_and_spaces() -> None:
    _, _, digest = sign("sha256").partition("=")
    assert verify_flux_signature(SECRET, BODY, f" SHA256={digest.upper()} ")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256",
        "sha256=",
        "sha256=zz",
        "md5=" + hmac.new(SECRET.encode(), BODY, "md5").hexdigest(),
        "sha3_256=" + hmac.new(SECRET.encode(), BODY, "sha3_256").hexdigest(),
        "sha256=" + hmac.new(b"other", BODY, "sha256").hexdigest(),
        sign("sha256", BODY + b" "),
        sign("sha256")[:-2],
        sign("sha1").replace("sha1=", "sha256="),
        "sha256=" + "é" * 64,
        "sha256=\ud800",
    ],
    ids=[
        "missing",
        "empty",
        "no-digest",
        "empty-digest",
        "not-hex",
        "md5",
        "sha3",
        "wrong-key",
        "other-body",
        "truncated",
        "algo-mismatch",
        "non-ascii",
        "surrogate",
    ],
)
def test_flux_signature_bad(header: str | None) -> None:
    assert not verify_flux_signature(SECRET, BODY, header)


def test_flux_signature_refused_when_no_secret_is_configured() -> None:
    assert not verify_flux_signature("", BODY, sign("sha256", key=""))


def test_bearer() -> None:
    assert verify_bearer("tok-123", "Bearer tok-123")
    assert verify_bearer("tok-123", "bearer   tok-123 ")
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer tok-1234",
        "Basic tok-123",
        "tok-123",
        "Bearer \ud800",
        "Bearer é",
    ):
        assert not verify_bearer("tok-123", header), header
    assert not verify_bearer("", "Bearer "), "an unset token must refuse everything"
    assert not verify_bearer("", "Bearer x")


# --------------------------------------------------------------------------------------------- refusals


def _flux(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = load("flux", "kustomization-succeeded")
    for key, value in changes.items():
        if value is ...:
            del payload[key]
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "flux event must be a JSON object, got an array"),
        ("x", "flux event must be a JSON object, got a string"),
        (None, "flux event must be a JSON object, got null"),
        (_flux(involvedObject=...), "involvedObject is missing"),
        (_flux(involvedObject=None), "involvedObject must be a JSON object, got null"),
        (_flux(involvedObject=["Kustomization"]), "involvedObject must be a JSON object, got an array"),
        (_flux(involvedObject={"kind": "Kustomization", "namespace": "x"}), "involvedObject.name is missing"),
        (
            _flux(involvedObject={"kind": "Kustomization", "name": "", "namespace": "x"}),
            "involvedObject.name must not be empty",
        ),
        (
            _flux(involvedObject={"kind": "Kustomization", "name": "a b", "namespace": "x"}),
            "involvedObject.name 'a b' is not a valid Kubernetes name",
        ),
        (
            _flux(involvedObject={"kind": "Kustomization", "name": "a", "namespace": "\ud800"}),
            "involvedObject.namespace is not valid Unicode text (lone surrogate)",
        ),
        (
            _flux(involvedObject={"kind": 3, "name": "a", "namespace": "x"}),
            "involvedObject.kind must be a string, got a number",
        ),
        (_flux(severity=...), "severity is missing"),
        (_flux(severity="warning"), "severity must be one of info, error, trace; got 'warning'"),
        (_flux(reason=7), "reason must be a string, got a number"),
        (_flux(message={"a": 1}), "message must be a string, got an object"),
        (_flux(timestamp="yesterday"), "timestamp 'yesterday' is not an RFC 3339 time"),
        (_flux(timestamp=1700000000), "timestamp must be an RFC 3339 string, got a number"),
        (_flux(metadata=["revision"]), "metadata must be an object of strings, got an array"),
        (
            _flux(metadata={"revision": "main@sha1:nothex"}),
            "bad metadata revision 'main@sha1:nothex': the sha1 part must be 40 hex digits",
        ),
        (_flux(metadata={"revision": 42}), "metadata revision must be a string, got a number"),
        (_flux(metadata={"kustomize.toolkit.fluxcd.io/revision": "main@sha1:abc"}), "bad metadata revision"),
        (_flux(metadata={"originRevision": "x@sha1:0"}), "bad metadata originRevision"),
        (_flux(metadata={"cluster": True}), "metadata cluster must be a string, got a boolean"),
        (_flux(message="x" * 70_000), "message is longer than 64000 characters"),
    ],
)  # fmt: skip
def test_malformed_flux_payloads(payload: Any, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_flux_event(payload, received_at=RECEIVED)
    assert message in str(info.value)
    assert info.value.message == str(info.value)
    assert not isinstance(info.value, UnsupportedEvent)


def _argo(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = load("argocd", "app-deployed")
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1], "argocd event must be a JSON object, got an array"),
        (_argo(app=...), "app must be a non-empty string"),
        (_argo(app="<no value>"), "app must be a non-empty string"),
        (_argo(app=["guestbook"]), "app must be a string, got an array"),
        (
            _argo(phase="Done"),
            "unknown operation phase 'Done' in phase (known: Error, Failed, Running, Succeeded, Terminating)",
        ),
        (_argo(app="Guest Book"), "app 'Guest Book' is not a valid Kubernetes name"),
        (_argo(message="ok \ud800"), "message is not valid Unicode text (lone surrogate)"),
        (_argo(healthStatus="Sick"), "unknown health status 'Sick' in healthStatus"),
        (_argo(syncStatus="Maybe"), "unknown sync status 'Maybe' in syncStatus"),
        (_argo(revision=123), "revision must be a string, got a number"),
        (_argo(revision="abc def"), "bad revision 'abc def'"),
        (_argo(finishedAt="soon"), "finishedAt 'soon' is not an RFC 3339 time"),
        (_argo(finishedAt="0001-01-01T00:00:00+01:00"), "is not an RFC 3339 time"),
        (_argo(message=False), "message must be a string, got a boolean"),
    ],
)  # fmt: skip
def test_malformed_argocd_payloads(payload: Any, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_argocd_event(payload, received_at=RECEIVED)
    assert message in str(info.value)


def test_payload_error_is_an_opsbot_error() -> None:
    assert issubclass(PayloadError, OpsbotError)


# --------------------------------------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=60)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "involvedObject",
        "kind",
        "name",
        "namespace",
        "apiVersion",
        "severity",
        "timestamp",
        "message",
        "reason",
        "metadata",
        "revision",
        "originRevision",
        "commit",
        "cluster",
        "kustomize.toolkit.fluxcd.io/revision",
        "helm.toolkit.fluxcd.io/revision",
        "app",
        "phase",
        "healthStatus",
        "syncStatus",
        "syncRevision",
        "finishedAt",
        "healthMessage",
    ]
)
interesting_strings = st.sampled_from(
    [
        "",
        "<no value>",
        "Kustomization",
        "HelmRelease",
        "info",
        "error",
        "Succeeded",
        "Failed",
        "Degraded",
        "Healthy",
        f"main@sha1:{SHA_OK}",
        "main@sha1:",
        "@sha1:" + "0" * 40,
        "sha256:" + "f" * 64,
        "blake3:" + "0" * 64,
        "x/" + "A" * 40,
        "2026-01-15T10:21:33Z",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+14:00",
        "\ud800",
        "\x00",
    ]
)
any_json_dict = st.dictionaries(
    FIELD_NAMES | st.text(max_size=12), json_values | interesting_strings, max_size=8
)


@st.composite
def mutated_fixture(draw: st.DrawFn, agent: str) -> Any:
    """A real payload with a few values swapped for arbitrary ones, to reach the deeper checks."""
    names = sorted(FLUX_EXPECTED) if agent == "flux" else sorted(ARGO_EXPECTED)
    payload = load(agent, draw(st.sampled_from(names)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = payload
        if isinstance(payload.get("metadata"), dict) and draw(st.booleans()):
            target = payload["metadata"]
        elif isinstance(payload.get("involvedObject"), dict) and draw(st.booleans()):
            target = payload["involvedObject"]
        key = draw(FIELD_NAMES | st.sampled_from(sorted(target) or ["x"]))
        if draw(st.integers(0, 5)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(json_values | interesting_strings)
    return payload


def _check(parser: Any, payload: Any) -> None:
    try:
        event = parser(payload, received_at=RECEIVED)
    except PayloadError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert isinstance(event, AgentEvent)
    assert isinstance(event.outcome, Outcome)
    assert event.at.tzinfo is not None
    event.dedup_key()


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(payload=any_json_dict | json_values)
def test_fuzz_flux_parser_arbitrary(payload: Any) -> None:
    _check(parse_flux_event, payload)


@FUZZ
@given(payload=any_json_dict | json_values)
def test_fuzz_argocd_parser_arbitrary(payload: Any) -> None:
    _check(parse_argocd_event, payload)


@FUZZ
@given(payload=mutated_fixture("flux"))
def test_fuzz_flux_parser_mutated(payload: Any) -> None:
    _check(parse_flux_event, payload)


@FUZZ
@given(payload=mutated_fixture("argocd"))
def test_fuzz_argocd_parser_mutated(payload: Any) -> None:
    _check(parse_argocd_event, payload)


@FUZZ
@given(raw=st.text(max_size=80) | interesting_strings | json_values)
def test_fuzz_revision_parser(raw: Any) -> None:
    try:
        rev = parse_flux_revision(raw)
    except PayloadError:
        return
    assert rev.sha == "" or (len(rev.sha) == 40 and rev.sha == rev.sha.lower())


@FUZZ
@given(secret=st.text(max_size=20), body=st.binary(max_size=64), header=st.none() | st.text(max_size=140))
def test_fuzz_signature_checks_never_raise(secret: str, body: bytes, header: str | None) -> None:
    assert verify_flux_signature(secret, body, header) in (True, False)
    assert verify_bearer(secret, header) in (True, False)


# ------------------------------------------------------------------------ one table for both roads


@dataclass(frozen=True)
class _Resource:
    kind: str


@pytest.mark.parametrize("phase", sorted(ARGO_PHASES | {""}))
@pytest.mark.parametrize("health", sorted(ARGO_HEALTH | {""}))
def test_argo_cd_webhook_and_watch_give_one_verdict(phase: str, health: str) -> None:
    """The same Application state read from the notification body and from the object's status
    gives the same outcome, reason and message: both roads go through `agent_events`."""
    if not phase and not health:
        return  # an object that says nothing yet is no event on the watch road
    body = {"app": "shop", "namespace": "argocd", "phase": phase, "healthStatus": health,
            "message": "synced", "healthMessage": "pod crashloops", "revision": SHA_OK}
    obj = {
        "metadata": {"name": "shop", "namespace": "argocd"},
        "status": {
            "operationState": {"phase": phase, "message": "synced", "syncResult": {"revision": SHA_OK}},
            "health": {"status": health, "message": "pod crashloops"},
        },
    }
    hook = parse_argocd_event(body, received_at=RECEIVED)
    watched = event_from_object(_Resource("Application"), obj, now=RECEIVED)
    assert watched is not None
    assert (watched.outcome, watched.reason, watched.message, watched.revision) == (
        hook.outcome, hook.reason, hook.message, hook.revision,
    )


@pytest.mark.parametrize("reason", ["ReconciliationFailed", "HealthCheckFailed", "Progressing", "SomethingNew"])
def test_a_flux_ready_false_reads_as_an_error_event_would(reason: str) -> None:
    """A Ready=False condition is judged by the same reason table as an `error` webhook event."""
    obj = {
        "metadata": {"name": "apps", "namespace": "flux-system", "generation": 1},
        "status": {"observedGeneration": 1, "lastAttemptedRevision": f"main@sha1:{SHA_OK}",
                   "conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}]},
    }
    watched = event_from_object(_Resource("Kustomization"), obj, now=RECEIVED)
    assert watched is not None and watched.outcome is flux_outcome(reason, "error")
    assert watched.revision == SHA_OK
