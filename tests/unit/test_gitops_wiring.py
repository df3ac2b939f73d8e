"""The Flux and Argo CD wiring we ship in deploy/gitops/ must produce what opsbot's parsers read.

The Argo CD template is rendered with a small imitation of Go's text/template (the subset the
template uses: field paths, `with`/`if`/`else`/`end`, `toJson`), faithful on the points that break
real templates: a missing map key prints `<no value>`, a field of an explicit null is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from opsbot.core.model import Outcome
from opsbot.intake.agents import parse_argocd_event, parse_flux_event

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "deploy" / "gitops"
ARGO_FIXTURES = ROOT / "tests" / "fixtures" / "payloads" / "argocd"
RECEIVED = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------- go template


class TemplateError(Exception):
    pass


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_PATH = re.compile(r"\A(?:\.|(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\Z")

Node = Any  # str | ("print", expr) | ("block", kind, expr, body, else_body)


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if out and out[-1][0] == "trim":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        if m.group(3):
            out.append(("trim", ""))
        pos = m.end()
    tail = src[pos:]
    if out and out[-1][0] == "trim":
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int = 0, *, nested: bool = False) -> tuple[list[Node], int, str]:
    nodes: list[Node] = []
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(value)
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if not nested:
                raise TemplateError(f"unexpected {{{{{word}}}}}")
            return nodes, i, word
        if word in ("with", "if"):
            expr = value.split(None, 1)[1]
            body, i, stop = _parse(tokens, i, nested=True)
            else_body: list[Node] = []
            if stop == "else":
                else_body, i, stop = _parse(tokens, i, nested=True)
            if stop != "end":
                raise TemplateError(f"{{{{{word}}}}} without {{{{end}}}}")
            nodes.append(("block", word, expr, body, else_body))
            continue
        nodes.append(("print", value))
    if nested:
        raise TemplateError("missing {{end}}")
    return nodes, i, ""


def _path(expr: str, dot: Any) -> Any:
    if not _PATH.match(expr):
        raise TemplateError(f"unsupported expression {expr!r}")
    cur = dot
    for name in [p for p in expr.split(".") if p]:
        if cur is MISSING:
            return MISSING
        if cur is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
        if not isinstance(cur, dict):
            raise TemplateError(f"can't evaluate field {name} in type {type(cur).__name__}")
        cur = cur.get(name, MISSING)
    return cur


def _to_json(value: Any) -> str:
    if value is MISSING or value is None:
        return "null"
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes HTML-significant characters and the JS line separators.
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


_FUNCS: dict[str, Callable[[Any], str]] = {"toJson": _to_json}


def _eval(expr: str, dot: Any) -> tuple[Any, bool]:
    """Evaluate an action; the flag says the value is already text (a function's result)."""
    parts = expr.split()
    if len(parts) == 2 and parts[0] in _FUNCS:
        return _FUNCS[parts[0]](_path(parts[1], dot)), True
    if len(parts) == 1:
        return _path(parts[0], dot), False
    raise TemplateError(f"unsupported action {expr!r}")


def _print(value: Any) -> str:
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"refusing to print a {type(value).__name__} (Go would print map[...] / [...])")


def _truth(value: Any) -> bool:
    return value is not MISSING and value is not None and bool(value)


def _exec(nodes: list[Node], dot: Any) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "print":
            value, is_text = _eval(node[1], dot)
            out.append(value if is_text else _print(value))
        else:
            _, word, expr, body, else_body = node
            value, _is_text = _eval(expr, dot)
            if _truth(value):
                out.append(_exec(body, value if word == "with" else dot))
            else:
                out.append(_exec(else_body, dot))
    return "".join(out)


def render_go_template(src: str, data: dict[str, Any]) -> str:
    nodes, _, _ = _parse(_tokens(src))
    return _exec(nodes, data)


class TestGoTemplateImitation:
    def test_missing_key_prints_no_value_and_chains(self) -> None:
        assert render_go_template("{{.a.b.c}}", {"a": {}}) == "<no value>"

    def test_field_of_null_is_an_error_as_in_go(self) -> None:
        with pytest.raises(TemplateError, match="nil pointer"):
            render_go_template("{{.a.b}}", {"a": None})

    def test_with_else_and_tojson(self) -> None:
        src = "{{with .a}}{{toJson .m}}{{else}}null{{end}}"
        assert render_go_template(src, {"a": {"m": 'say "hi"\n<b>'}}) == '"say \\"hi\\"\\n\\u003cb\\u003e"'
        assert render_go_template(src, {"a": None}) == "null"
        assert render_go_template(src, {}) == "null"

    def test_trim_markers(self) -> None:
        assert render_go_template("a  {{- .x -}}  b", {"x": 1}) == "a1b"


# --------------------------------------------------------------------------------------------- files


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path) -> dict[str, Any]:
    docs = _docs(path)
    assert len(docs) == 1, path
    return docs[0]


def test_every_shipped_yaml_parses_and_names_its_kind() -> None:
    files = sorted(GITOPS.rglob("*.yaml"))
    assert {f.relative_to(GITOPS).parts[0] for f in files} == {"flux", "argocd"}
    for f in files:
        for doc in _docs(f):
            assert isinstance(doc, dict), f
            assert doc.get("apiVersion") and doc.get("kind"), f
    for d in ("flux", "argocd"):
        assert (GITOPS / d / "README.md").is_file()


# --------------------------------------------------------------------------------------------- flux


def test_flux_provider_posts_signed_events_to_the_flux_route() -> None:
    provider = _one(GITOPS / "flux" / "provider.yaml")
    assert provider["apiVersion"] == "notification.toolkit.fluxcd.io/v1beta3"
    assert provider["kind"] == "Provider"
    assert provider["spec"]["type"] == "generic-hmac"
    url = urlsplit(provider["spec"]["address"])
    assert url.path == "/webhooks/flux"
    assert (url.hostname, url.port) == ("opsbot.opsbot.svc", 3000)

    secret = _one(GITOPS / "flux" / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert provider["spec"]["secretRef"]["name"] == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == provider["metadata"]["namespace"]
    assert secret["stringData"] == {"token": ""}, "the example must not carry a value"


def test_flux_alert_sends_successes_for_kustomizations_and_helmreleases() -> None:
    provider = _one(GITOPS / "flux" / "provider.yaml")
    alert = _one(GITOPS / "flux" / "alert.yaml")
    assert alert["kind"] == "Alert"
    assert alert["spec"]["providerRef"]["name"] == provider["metadata"]["name"]
    assert alert["metadata"]["namespace"] == provider["metadata"]["namespace"]
    assert alert["spec"]["eventSeverity"] == "info"
    sources = {(s["kind"], s["name"]) for s in alert["spec"]["eventSources"]}
    assert sources >= {("Kustomization", "*"), ("HelmRelease", "*")}


def test_flux_kustomization_lists_existing_files_and_leaves_the_secret_out() -> None:
    kustomization = _one(GITOPS / "flux" / "kustomization.yaml")
    for res in kustomization["resources"]:
        assert (GITOPS / "flux" / res).is_file()
    assert "secret.example.yaml" not in kustomization["resources"]


def test_flux_events_for_the_alert_sources_parse() -> None:
    """The Alert selects exactly the kinds the parser accepts."""
    alert = _one(GITOPS / "flux" / "alert.yaml")
    for source in alert["spec"]["eventSources"]:
        group = {"Kustomization": "kustomize", "HelmRelease": "helm"}[source["kind"]]
        event = {
            "involvedObject": {
                "kind": source["kind"],
                "name": "x",
                "namespace": "flux-system",
                "apiVersion": f"{group}.toolkit.fluxcd.io/v1",
            },
            "severity": "info",
            "reason": "Progressing",
            "message": "",
            "timestamp": "2026-01-15T10:00:00Z",
        }
        assert parse_flux_event(event, received_at=RECEIVED).kind == source["kind"]


# --------------------------------------------------------------------------------------------- argo cd


def _argo_cm() -> dict[str, Any]:
    return _one(GITOPS / "argocd" / "argocd-notifications-cm.yaml")


def _argo_template_body() -> str:
    template = yaml.safe_load(_argo_cm()["data"]["template.opsbot-event"])
    hook = template["webhook"]["opsbot"]
    assert hook["method"] == "POST"
    body = hook["body"]
    assert isinstance(body, str)
    return body


def test_argocd_service_sends_the_bearer_secret_as_json() -> None:
    cm = _argo_cm()
    assert cm["metadata"] == {"name": "argocd-notifications-cm", "namespace": "argocd"}
    service = yaml.safe_load(cm["data"]["service.webhook.opsbot"])
    assert urlsplit(service["url"]).path == "/webhooks/argocd"
    headers = {h["name"]: h["value"] for h in service["headers"]}
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer $opsbot-token"

    secret = _one(GITOPS / "argocd" / "argocd-notifications-secret.example.yaml")
    assert secret["metadata"]["name"] == "argocd-notifications-secret"
    assert secret["stringData"] == {"opsbot-token": ""}, "the example must not carry a value"


def test_argocd_triggers_send_our_template_and_the_subscription_example_uses_them() -> None:
    cm = _argo_cm()
    triggers = {
        k.removeprefix("trigger."): yaml.safe_load(v)
        for k, v in cm["data"].items()
        if k.startswith("trigger.")
    }
    assert set(triggers) == {"on-deployed", "on-sync-failed", "on-health-degraded"}
    for name, conditions in triggers.items():
        assert isinstance(conditions, list) and conditions, name
        for cond in conditions:
            assert cond["send"] == ["opsbot-event"], name
            assert cond["when"], name
            assert "syncResult" in cond["oncePer"], name

    app = _one(GITOPS / "argocd" / "application-subscription.example.yaml")
    annotations = app["metadata"]["annotations"]
    subscribed = set()
    for key, value in annotations.items():
        prefix, _, rest = key.partition("/")
        assert prefix == "notifications.argoproj.io"
        verb, trigger, service = rest.split(".")
        assert (verb, service, value) == ("subscribe", "opsbot", "")
        subscribed.add(trigger)
    assert subscribed == set(triggers)


CONTEXT = {"argocdUrl": "https://argocd.example.com", "notificationType": "webhook"}
SHA_DEPLOYED = "5b1c3a7e9d2f4c6a8b0e1d3f5a7c9e2b4d6f8a0c"
SHA_FAILED = "c0ffee5a1b2c3d4e5f60718293a4b5c6d7e8f901"


def _app(status: dict[str, Any], *, name: str = "guestbook") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd", "uid": "2c7f1d6a-7b1e-4d7e-9a3f-0e5b6c1d2e3f"},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/example/manifests.git",
                "targetRevision": "main",
                "path": "apps/guestbook/overlays/production",
            },
            "destination": {"name": "in-cluster", "namespace": "guestbook"},
        },
        "status": status,
    }


APPS: dict[str, dict[str, Any]] = {
    "app-deployed": _app(
        {
            "sync": {"status": "Synced", "revision": SHA_DEPLOYED},
            "health": {"status": "Healthy", "lastTransitionTime": "2026-01-15T10:31:12Z"},
            "operationState": {
                "operation": {"sync": {"revision": SHA_DEPLOYED}, "initiatedBy": {"automated": True}},
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "syncResult": {
                    "revision": SHA_DEPLOYED,
                    "source": {"path": "apps/guestbook/overlays/production"},
                },
                "startedAt": "2026-01-15T10:30:58Z",
                "finishedAt": "2026-01-15T10:31:01Z",
            },
        }
    ),
    "app-sync-failed": _app(
        {
            "sync": {"status": "OutOfSync", "revision": SHA_FAILED},
            "health": {"status": "Healthy"},
            "operationState": {
                "operation": {"sync": {"revision": SHA_FAILED}},
                "phase": "Failed",
                "message": (
                    'one or more objects failed to apply, reason: Deployment.apps "guestbook-ui" is invalid:'
                    " spec.template.spec.containers[0].image: Required value"
                ),
                "syncResult": {"revision": SHA_FAILED},
                "startedAt": "2026-01-15T10:40:02Z",
                "finishedAt": "2026-01-15T10:40:04Z",
            },
        }
    ),
    "app-health-degraded": _app(
        {
            "sync": {"status": "Synced", "revision": SHA_DEPLOYED},
            "health": {
                "status": "Degraded",
                "message": 'Deployment "guestbook-ui" exceeded its progress deadline',
                "lastTransitionTime": "2026-01-15T10:41:01Z",
            },
            "operationState": {
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "syncResult": {"revision": SHA_DEPLOYED},
                "startedAt": "2026-01-15T10:30:58Z",
                "finishedAt": "2026-01-15T10:31:01Z",
            },
        }
    ),
}


def _render(app: dict[str, Any]) -> dict[str, Any]:
    text = render_go_template(_argo_template_body(), {"app": app, "context": CONTEXT})
    body = json.loads(text)
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("app-deployed", Outcome.SUCCEEDED),
        ("app-sync-failed", Outcome.FAILED),
        ("app-health-degraded", Outcome.DEGRADED),
    ],
)
def test_argocd_template_renders_json_the_parser_accepts(name: str, outcome: Outcome) -> None:
    body = _render(APPS[name])
    event = parse_argocd_event(body, received_at=RECEIVED)
    assert event.outcome is outcome
    assert (event.name, event.namespace, event.kind, event.source) == (
        "guestbook",
        "argocd",
        "Application",
        "argocd",
    )
    assert event.revision == APPS[name]["status"]["operationState"]["syncResult"]["revision"]
    assert event.at == datetime.fromisoformat(APPS[name]["status"]["operationState"]["finishedAt"])
    assert event.cluster == "in-cluster"


@pytest.mark.parametrize("name", sorted(APPS))
def test_argocd_fixtures_are_what_the_shipped_template_renders(name: str) -> None:
    """The captured payloads the parser tests use stay in step with the template we ship."""
    fixture = json.loads((ARGO_FIXTURES / f"{name}.json").read_text())
    assert _render(APPS[name]) == fixture


def test_argocd_template_keeps_free_text_valid_json() -> None:
    app = APPS["app-sync-failed"]
    body = _render(app)
    assert body["message"] == app["status"]["operationState"]["message"]
    tricky = json.loads(json.dumps(app))
    tricky["status"]["operationState"]["message"] = 'line "one"\nline\ttwo \\ <html> & \u2028'
    assert _render(tricky)["message"] == tricky["status"]["operationState"]["message"]


@pytest.mark.parametrize(
    "status",
    [
        {"sync": {"status": "OutOfSync", "revision": SHA_DEPLOYED}, "health": {"status": "Missing"}},
        {"sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"}, "operationState": None},
        {},
    ],
    ids=["no-operation-yet", "null-operation", "no-status"],
)
def test_argocd_template_survives_an_application_that_never_synced(status: dict[str, Any]) -> None:
    body = _render(_app(status))
    event = parse_argocd_event(body, received_at=RECEIVED)
    assert event.outcome is Outcome.PROGRESSING
    assert event.at == RECEIVED
    assert body["message"] is None


def test_argocd_running_sync_is_progressing() -> None:
    app = json.loads(json.dumps(APPS["app-deployed"]))
    op = app["status"]["operationState"]
    op["phase"] = "Running"
    op["message"] = "waiting for completion of hook batch/Job/migrate"
    del op["syncResult"], op["finishedAt"]
    event = parse_argocd_event(_render(app), received_at=RECEIVED)
    assert event.outcome is Outcome.PROGRESSING
    assert event.reason == "Running"
    assert event.revision == SHA_DEPLOYED  # falls back to status.sync.revision
