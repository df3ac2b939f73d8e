"""Prometheus metrics: the series exist with the documented names, the hooks count what happened,
and a real run of commands through `Opsbot` shows up in the exposition text with the right counts.

Every test builds its own `Metrics`, so counts are exact (no deltas against a shared registry).
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from opsbot import metrics
from opsbot.app import Opsbot
from opsbot.core.dispatcher import Dispatcher
from opsbot.core.model import Actor, Request, RequestState, Scale
from opsbot.core.registry import Command, Registry
from opsbot.core.results import Failure, Info, NoChange, Result
from opsbot.metrics import Metrics
from opsbot.metrics_routes import metrics_routes
from opsbot.settings import RbacSettings, load_settings
from tests.repos import make_repo

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by (sample name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float | None:
    body, _ = m.render()
    return samples(body.decode()).get((name, frozenset(labels.items())))


def request(**kw: object) -> Request:
    base: dict[str, object] = {
        "id": "R1",
        "intent_key": "k",
        "command": "scale frontend 5 in production",
        "verb": "scale",
        "app": "frontend",
        "env": "production",
        "requester": "alice",
        "state": RequestState.DEPLOYED,
    }
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- series


def test_every_series_is_exposed_with_its_documented_name() -> None:
    m = Metrics()
    m.record_command("scale", "ok")
    m.record_pr_opened()
    m.record_pr_merged()
    m.record_merge_to_deployed(42.0)
    m.record_webhook_event("flux", "accepted")
    m.record_api_error("github", "rate_limited")
    m.record_api_retry("slack")
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    got = samples(body.decode())
    assert got[("opsbot_commands_total", frozenset({("command", "scale"), ("outcome", "ok")}))] == 1
    assert got[("opsbot_prs_opened_total", frozenset())] == 1
    assert got[("opsbot_prs_merged_total", frozenset())] == 1
    assert got[("opsbot_merge_to_deployed_seconds_count", frozenset())] == 1
    assert got[("opsbot_merge_to_deployed_seconds_sum", frozenset())] == 42.0
    assert got[("opsbot_merge_to_deployed_seconds_bucket", frozenset({("le", "60.0")}))] == 1
    assert got[("opsbot_merge_to_deployed_seconds_bucket", frozenset({("le", "30.0")}))] == 0
    assert got[("opsbot_webhook_events_total", frozenset({("source", "flux"), ("outcome", "accepted")}))] == 1
    assert got[("opsbot_api_errors_total", frozenset({("api", "github"), ("kind", "rate_limited")}))] == 1
    assert got[("opsbot_api_retries_total", frozenset({("api", "slack")}))] == 1


def test_registries_are_separate() -> None:
    a, b = Metrics(), Metrics()
    a.record_pr_opened()
    assert value(a, "opsbot_prs_opened_total") == 1
    assert value(b, "opsbot_prs_opened_total") == 0


def test_module_functions_record_on_the_default_registry() -> None:
    before = value(metrics.DEFAULT, "opsbot_api_retries_total", api="kubernetes") or 0.0
    metrics.record_api_retry("kubernetes")
    body, _ = metrics.render()
    assert (
        samples(body.decode())[("opsbot_api_retries_total", frozenset({("api", "kubernetes")}))] == before + 1
    )


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown command outcome"):
        Metrics().record_command("scale", "great")


def test_label_values_from_outside_are_bounded() -> None:
    m = Metrics()
    m.record_api_error("GitHub API", "HTTP 503: <html>" + "x" * 500)
    (key,) = [k for k in samples(m.render()[0].decode()) if k[0] == "opsbot_api_errors_total"]
    labels = dict(key[1])
    assert labels["api"] == "github_api"
    assert len(labels["kind"]) <= 40 and set(labels["kind"]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    m = Metrics()
    m.record_pr_opened()
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


# --------------------------------------------------------------------------------------------- hooks


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (Info(None, title="status"), "ok"),
        (NoChange(None, message="already 3"), "no_change"),
        (Failure(None, message="Unknown environment"), "failure"),
        (Failure(None, message="No role", denied=True), "denied"),
        (Failure(None, reference="abcd1234"), "error"),
    ],
)
def test_command_outcome(result: Result, outcome: str) -> None:
    assert metrics.command_outcome(result) == outcome
    m = Metrics()
    m.observe_command("status", result)
    assert value(m, "opsbot_commands_total", command="status", outcome=outcome) == 1


def test_merge_to_deployed_from_the_notifier_or_the_request_times() -> None:
    m = Metrics()
    merged = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    m.observe_transition(request(), "deployed", {"since_merge": 102.0})
    m.observe_transition(request(), "deployed", {"since_merge": timedelta(minutes=2)})
    m.observe_transition(request(merged_at=merged, deployed_at=merged + timedelta(seconds=7)), "deployed", {})
    m.observe_transition(request(), "deployed", {})  # no times known: nothing to observe
    m.observe_transition(request(), "approved", {"by": "bob"})
    assert value(m, "opsbot_merge_to_deployed_seconds_count") == 3
    assert value(m, "opsbot_merge_to_deployed_seconds_sum") == 102.0 + 120.0 + 7.0
    assert value(m, "opsbot_prs_merged_total") == 0
    m.observe_transition(request(state=RequestState.MERGED), "merged", {"by": "bob", "sha": "1a2b3c4"})
    assert value(m, "opsbot_prs_merged_total") == 1


def _explode(intent: object, ctx: object) -> Result:
    raise RuntimeError("bug")


def _answer(intent: object, ctx: object) -> Result:
    return Info(None, title="fine")


class _Ctx:
    settings = load_settings(environ={})
    requests = None


def _dispatcher(observe: object) -> Dispatcher:
    registry = Registry(
        [
            Command("boom", "boom", "fails", parse=lambda a: Scale("x", "dev", 1), run=_explode, kind="read"),
            Command(
                "fine", "fine", "answers", parse=lambda a: Scale("x", "dev", 1), run=_answer, kind="read"
            ),
        ]
    )
    return Dispatcher(registry, lambda *a: _Ctx(), observe=observe)  # type: ignore[arg-type]


def test_the_observer_sees_every_command_with_its_name() -> None:
    seen: list[tuple[str, str]] = []
    d = _dispatcher(lambda n, r: seen.append((n, metrics.command_outcome(r))))
    boom = d.handle("boom", Actor("U1"))
    assert isinstance(boom, Failure) and boom.reference
    assert isinstance(d.handle("nonsense words", Actor("U1")), Failure)  # a usage answer, not an exception
    assert isinstance(d.handle("fine", Actor("U1")), Info)
    assert seen == [("boom", "error"), ("unknown", "failure"), ("fine", "ok")]


def test_a_broken_observer_changes_nothing_the_person_is_told() -> None:
    def broken(name: str, result: Result) -> None:
        raise RuntimeError("observer bug")

    d = _dispatcher(broken)
    answer = d.handle("fine", Actor("U1"))
    assert isinstance(answer, Info) and answer.title == "fine"


def test_the_core_never_imports_prometheus() -> None:
    offenders = []
    for layer in ("opsbot/core", "opsbot/manifests", "commands"):
        for py in sorted((ROOT / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(py.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                offenders += [
                    f"{py.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.startswith(("prometheus_client", "opsbot.metrics"))
                ]
    assert offenders == []


# --------------------------------------------------------------------------------------------- HTTP


async def test_metrics_route_serves_the_exposition(aiohttp_client: object) -> None:
    m = Metrics()
    m.record_command("help", "ok")
    app = web.Application()
    app.add_routes(metrics_routes(m))
    client = await aiohttp_client(app)  # type: ignore[operator]
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    got = samples(await resp.text())
    assert got[("opsbot_commands_total", frozenset({("command", "help"), ("outcome", "ok")}))] == 1
    om = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")


# --------------------------------------------------------------------------------------------- end to end


def test_end_to_end_commands_through_opsbot_then_scrape(tmp_path: Path) -> None:
    """Real git repo, local forge, SQLite: the counts on /metrics are the counts of what happened."""
    repo = make_repo("fleet", tmp_path / "fleet")
    m = Metrics()
    settings = load_settings(
        environ={}, repo=str(repo), rbac=RbacSettings(protected_envs=frozenset({"staging"}))
    )
    bot = Opsbot(settings, metrics=m)
    alice, bob = Actor("alice", "alice", "cli"), Actor("bob", "bob", "cli")
    try:
        first = bot.handle("scale frontend 5 in production", alice)
        assert first.as_json().get("pr", {}).get("existing") is False
        again = bot.handle("scale frontend 5 in production", alice)  # the open PR again: not a new one
        assert again.as_json()["pr"]["existing"] is True
        assert isinstance(bot.handle("scale frontend 3 in production", alice), NoChange)  # already 3 on main
        assert isinstance(bot.handle("scale frontend 2 in production", alice, apply=False), Result)
        bot.handle("scale nosuchapp 2 in production", alice)  # unknown app: failure
        bot.handle("frobnicate the cluster", alice)  # no such command: failure, command "unknown"
        assert bot.handle("scale frontend 2 in staging", alice).as_json()["denied"] is True
        assert "four-eyes" in bot.handle("approve R1", alice).text()
        bot.handle("approve R1", bob)
        bot.handle("merge R1", bob)
        bot.handle("merge R1", bob)  # already merged: answered, not counted as a second merge
        merged = bot.store.get_request("R1")
        assert merged is not None and merged.state == RequestState.MERGED and merged.merged_at
        # The deploy correlator's path: a store transition, then the transition hooks.
        deployed = bot.store.transition(
            "R1", RequestState.DEPLOYED, "flux", "live", deployed_at=merged.merged_at + timedelta(seconds=95)
        )
        assert deployed is not None
        bot.requests.notify(deployed, "deployed", {"env": "production"})
    finally:
        bot.close()
    got = samples(m.render()[0].decode())

    def commands(command: str, outcome: str) -> float:
        return got.get(
            ("opsbot_commands_total", frozenset({("command", command), ("outcome", outcome)})), 0.0
        )

    assert commands("scale", "ok") == 3  # opened, existing, planned
    assert commands("scale", "no_change") == 1
    assert commands("scale", "failure") == 1
    assert commands("scale", "denied") == 1
    assert commands("unknown", "failure") == 1
    assert commands("approve", "failure") == 1 and commands("approve", "ok") == 1
    assert commands("merge", "ok") == 2
    assert sum(v for (name, _), v in got.items() if name == "opsbot_commands_total") == 11
    assert got[("opsbot_prs_opened_total", frozenset())] == 1
    assert got[("opsbot_prs_merged_total", frozenset())] == 1
    assert got[("opsbot_merge_to_deployed_seconds_count", frozenset())] == 1
    assert got[("opsbot_merge_to_deployed_seconds_sum", frozenset())] == 95.0
    assert got[("opsbot_merge_to_deployed_seconds_bucket", frozenset({("le", "120.0")}))] == 1
    assert got[("opsbot_merge_to_deployed_seconds_bucket", frozenset({("le", "60.0")}))] == 0
