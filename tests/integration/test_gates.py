"""Metric gates against the Prometheus double (real HTTP, real JSON): pass, fail, unknown; and in
the request flow, a gate blocks a promotion's merge until it passes, with results in the thread and
in the `opsbot/gate` commit status."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.chat.console import Console
from opsbot.core.model import RequestState
from opsbot.core.results import Failure, Proposed, RequestUpdate
from opsbot.policy.model import Gate
from opsbot.policy.prometheus import Prometheus, judge
from opsbot.settings import load_settings
from tests.doubles.prometheus import PrometheusDouble, serve_prometheus
from tests.integration.test_policies_flow import THURSDAY, Clock, git

P99 = 'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{env="staging"}[10m])) by (le)) < 0.1'
GATE = Gate("p99 latency in staging", P99, "promote")
TOKEN = "prom-token-123"


@pytest.fixture
def prom() -> Iterator[tuple[PrometheusDouble, str]]:
    double = PrometheusDouble(token=TOKEN)
    with serve_prometheus(double) as url:
        yield double, url


def test_a_gate_passes_only_on_a_non_empty_all_true_result(prom: tuple[PrometheusDouble, str]) -> None:
    double, url = prom
    client = Prometheus(url, TOKEN, timeout=5)
    double.set(P99, "0.042", "0.07")
    ok = client.evaluate(GATE, THURSDAY)
    assert (ok.outcome, ok.detail) == ("pass", "2 sample(s), all true")
    assert double.asked[-1].query == P99 and double.asked[-1].time == f"{THURSDAY.timestamp():.3f}"
    assert double.asked[-1].authorization == f"Bearer {TOKEN}"

    double.set(P99)  # the comparison filtered every series out
    assert client.evaluate(GATE, THURSDAY).outcome == "fail"
    double.set(P99, "1", "0")
    zero = client.evaluate(GATE, THURSDAY)
    assert (zero.outcome, zero.detail) == ("fail", "1 of 2 sample(s) are 0 or NaN")
    double.set(P99, "NaN")
    assert client.evaluate(GATE, THURSDAY).outcome == "fail"
    double.set(P99, 1, result_type="scalar")
    assert client.evaluate(GATE, THURSDAY).outcome == "pass"


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (400, "bad_data", 'invalid parameter "query": 1:5: parse error: unexpected identifier'),
        (422, "execution", "expanding series: context canceled"),
        (503, "timeout", "query timed out in expression evaluation"),
        (503, "unavailable", "TSDB not ready"),
    ],
)
def test_prometheus_errors_make_the_gate_unknown_with_the_error(
    prom: tuple[PrometheusDouble, str], status: int, kind: str, message: str
) -> None:
    double, url = prom
    double.fail(P99, status, kind, message)
    result = Prometheus(url, TOKEN, timeout=5).evaluate(GATE, THURSDAY)
    assert result.outcome == "unknown"
    assert result.detail == f"Prometheus refused the query ({kind}): {message}"


def test_the_double_refuses_what_prometheus_refuses(prom: tuple[PrometheusDouble, str]) -> None:
    _, url = prom
    broken = Prometheus(url, TOKEN, timeout=5).evaluate(Gate("broken", "sum(rate(x[5m])", "all"), THURSDAY)
    assert broken.outcome == "unknown" and "(bad_data)" in broken.detail and "parse error" in broken.detail
    wrong = Prometheus(url, "not-the-token", timeout=5).evaluate(GATE, THURSDAY)
    assert wrong.outcome == "unknown" and wrong.detail == "Prometheus answered HTTP 401 without JSON"


def test_timeouts_and_unreachable_servers_are_unknown(prom: tuple[PrometheusDouble, str]) -> None:
    double, url = prom
    double.hang(P99)
    slow = Prometheus(url, TOKEN, timeout=0.2).evaluate(GATE, THURSDAY)
    assert (slow.outcome, slow.detail) == ("unknown", "Prometheus did not answer within 0.2s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = Prometheus(f"http://127.0.0.1:{port}", TOKEN, timeout=2).evaluate(GATE, THURSDAY)
    assert gone.outcome == "unknown" and gone.detail.startswith("Prometheus is unreachable:")


def test_judge_reads_malformed_answers_as_unknown() -> None:
    assert judge(GATE, 200, b"<html>").outcome == "unknown"
    assert judge(GATE, 200, b'{"status": "success"}').outcome == "unknown"
    odd = judge(GATE, 200, b'{"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}')
    assert odd.outcome == "unknown" and "needs a vector" in odd.detail
    text = judge(GATE, 200, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}')
    assert text.outcome == "unknown"


# --------------------------------------------------------------------------------------------- in the flow

GATED = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production:
    path: overlays/production
    promote_from: staging
    approvals: 1
    gates:
      - name: p99 latency in staging
        prometheus: 'P99'
        for: promote
""".replace("P99", P99.replace("'", "''"))


def gated_bot(fleet: Path, **settings: str) -> tuple[Console, Clock]:
    (fleet / ".opsbot.yaml").write_text(GATED)
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "gate production promotions")
    console = Console(Opsbot(load_settings(environ={}, repo=str(fleet), **settings)), out=io.StringIO())
    clock = Clock(THURSDAY)
    console.bot.policies.clock = clock
    return console, clock


def test_a_failing_gate_blocks_a_promotion_until_it_passes(fleet: Path, prom: tuple[PrometheusDouble, str]) -> None:
    double, url = prom
    bot, _ = gated_bot(fleet, prometheus_url=url, prometheus_token=TOKEN)
    try:
        r = bot.say("promote frontend to production", user="alice")
        assert isinstance(r, Proposed) and r.request, r.text()
        rid = r.request.id
        early = bot.say(f"merge {rid}", user="bob")  # not approved yet: Prometheus is not asked
        assert isinstance(early, Failure) and "needs 1 approval(s)" in early.text()
        assert double.asked == []
        bot.say(f"approve {rid}", user="bob")
        blocked = bot.say(f"merge {rid}", user="bob")
        assert isinstance(blocked, Failure)
        assert blocked.text() == (
            f"{rid} cannot merge: gate p99 latency in staging: fail (the query returned no samples)."
        )
        head = bot.bot.store.get_request(rid).head_sha  # type: ignore[union-attr]
        assert bot.bot.forge.statuses(head)["opsbot/gate"] == ("failure", "p99 latency in staging: fail")
        assert any(f"thread {rid}: 🛡️ ❌ gate p99 latency in staging: fail" in line for line in bot.transcript)
        assert bot.bot.store.get_request(rid).state is RequestState.APPROVED  # type: ignore[union-attr]

        double.set(P99, "0.081")
        merged = bot.say(f"merge {rid}", user="bob")
        assert isinstance(merged, RequestUpdate) and merged.request.state is RequestState.MERGED  # type: ignore[union-attr]
        assert "✅ gate p99 latency in staging: 1 sample(s), all true" in merged.text()
        assert bot.bot.forge.statuses(head)["opsbot/gate"] == ("success", "1 gate(s) passed")
        rows = [(r.action, r.detail) for r in bot.bot.store.audit_list(request_id=rid) if r.action == "gate"]
        assert rows == [("gate", "fail: the query returned no samples"), ("gate", "pass: 1 sample(s), all true")]

        # `for: promote`: a scale in production is not gated (no query is sent)
        asked = len(double.asked)
        s = bot.say("scale frontend 5 in production", user="alice")
        assert isinstance(s, Proposed) and s.request
        bot.say(f"approve {s.request.id}", user="bob")
        assert isinstance(bot.say(f"merge {s.request.id}", user="bob"), RequestUpdate)
        assert len(double.asked) == asked
    finally:
        bot.bot.close()


def test_a_gate_without_prometheus_is_unknown_and_blocks(fleet: Path) -> None:
    bot, _ = gated_bot(fleet)
    try:
        r = bot.say("promote frontend to production", user="alice")
        assert isinstance(r, Proposed) and r.request
        bot.say(f"approve {r.request.id}", user="bob")
        blocked = bot.say(f"merge {r.request.id}", user="bob")
        assert isinstance(blocked, Failure)
        assert "unknown (PROMETHEUS_URL is not set, so the gate cannot be checked)" in blocked.text()
        head = bot.bot.store.get_request(r.request.id).head_sha  # type: ignore[union-attr]
        assert bot.bot.forge.statuses(head)["opsbot/gate"][0] == "error"
    finally:
        bot.bot.close()


def test_settings_refuse_a_prometheus_url_that_is_not_http() -> None:
    from opsbot.errors import ConfigError

    with pytest.raises(ConfigError, match="PROMETHEUS_URL: expected http"):
        load_settings(environ={"PROMETHEUS_URL": "prometheus:9090"})
    assert load_settings(environ={"PROMETHEUS_TOKEN": "s3cret"}).prometheus_token.get() == "s3cret"
    assert "s3cret" not in repr(load_settings(environ={"PROMETHEUS_TOKEN": "s3cret"}))


