"""Policies through the real server and the Slack double: a freeze posts once in each open thread
and in the deploy channel and refuses the Merge button; an override without the role is refused;
a Flux failure in an `auto_revert` env opens the revert PR once, even when Flux redelivers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from opsbot.core.model import RequestState
from tests.e2e.test_deploy_flow import PROD_AGENT, Factory, deploys, flux_payload
from tests.plugins.slack import fleet_with_config

__all__ = ["deploys"]


async def test_a_freeze_is_told_in_each_thread_and_the_channel_and_blocks_the_merge_button(
    deploys: Factory, tmp_path: Path
) -> None:
    d = await deploys()
    await d.chat.ops("scale frontend 5 in production", user="U0ALICE")
    await d.chat.ops("scale cache 3 in production", user="U0ALICE")
    roots = d.chat.roots()
    assert len(roots) == 2
    await d.chat.click(roots[0], "approve", user="U0BOB")

    said = await d.chat.ops("freeze production for 2h because payment provider maintenance", user="U0CAROL")
    assert "production is frozen by <@U0CAROL> because payment provider maintenance" in said.ephemeral
    for root in roots:
        told = [t for t in d.chat.thread(root) if "is frozen by" in t]
        assert len(told) == 1 and "<@U0CAROL>" in told[0]
    lines = [line for line in d.deploy_lines() if "is frozen by" in line]
    assert len(lines) == 1

    refused = await d.chat.click(d.chat.roots()[0], "merge", user="U0BOB")
    assert "cannot merge now. production is frozen by <@U0CAROL>" in refused.ephemeral
    request = d.request_of(roots[0])
    assert request.state is RequestState.APPROVED

    override = await d.chat.ops(f"merge {request.id} override because it is tiny", user="U0BOB")
    assert "You may not override policies in production" in override.ephemeral
    assert d.bot.store.get_request(request.id).state is RequestState.APPROVED

    await d.chat.ops("unfreeze production", user="U0CAROL")
    merged = await d.chat.click(d.chat.roots()[0], "merge", user="U0BOB")
    assert d.bot.store.get_request(request.id).state is RequestState.MERGED, merged.ephemerals
    assert len([line for line in d.deploy_lines() if "was unfrozen by <@U0CAROL>" in line]) == 1


async def test_a_flux_failure_opens_the_revert_pr_once_even_when_redelivered(deploys: Factory, tmp_path: Path) -> None:
    repo = fleet_with_config(tmp_path / "fleet-revert", production={"agent": PROD_AGENT, "auto_revert": True})
    d = await deploys(repo=repo)
    root = await d.promote_and_merge("scale frontend 5 in production")
    request = d.request_of(root)
    failure = flux_payload("kustomization-health-check-failed-unprefixed", request.merge_sha, datetime.now(UTC))
    assert await d.flux(failure) == (202, {"result": "accepted"})
    assert await d.flux(failure) == (202, {"result": "duplicate"})  # Flux redelivers
    await d.flux({**failure, "message": failure["message"] + " (retry 2)"})  # and repeats it, reworded
    await d.settle()
    d.processor.run_rechecks([request.id])  # a replay of what is stored changes nothing either
    d.bot.deploy_failed(d.bot.store.get_request(request.id))
    await d.settle()

    failed = d.bot.store.get_request(request.id)
    assert failed.state is RequestState.FAILED
    reverts = [r for r in d.bot.store.list_requests() if r.requester == "opsbot"]
    assert len(reverts) == 1
    revert = reverts[0]
    assert revert.command == "scale frontend 3 in production" and revert.state is RequestState.PROPOSED
    assert revert.approvals_needed == 1  # the env's approval rules hold for opsbot's own PR
    assert d.bot.store.revert_of(request.id) == revert.id
    assert len(d.bot.forge.list_prs()) == 1  # the revert PR is the only open one
    told = [t for t in d.chat.thread(root) if t.startswith("↩️")]
    assert len(told) == 1 and f"opened the revert {revert.id}" in told[0] and "PR #2" in told[0]
    assert len([line for line in d.deploy_lines() if f"opened the revert {revert.id}" in line]) == 1
    assert [r.action for r in d.bot.store.audit_list(request_id=request.id)][-2:] == ["failed", "revert"]

    # the revert is approved and merged like any change; when it fails too, nothing new is opened
    await d.chat.ops(f"approve {revert.id}", user="U0BOB")
    await d.chat.ops(f"merge {revert.id}", user="U0BOB")
    merged = d.bot.store.get_request(revert.id)
    assert merged.state is RequestState.MERGED
    await d.flux(flux_payload("kustomization-health-check-failed-unprefixed", merged.merge_sha, datetime.now(UTC),
                              message="Health check failed after 5m: timeout waiting for frontend"))
    await d.settle()
    assert d.bot.store.get_request(revert.id).state is RequestState.FAILED
    assert len([r for r in d.bot.store.list_requests() if r.requester == "opsbot"]) == 1
    assert any("does not revert a revert" in line for line in d.deploy_lines())


async def test_a_lock_refuses_another_persons_command_in_slack(deploys: Factory) -> None:
    d = await deploys()
    took = await d.chat.ops("lock frontend in production because canary of 1.5.0", user="U0ALICE")
    assert "frontend in production is locked by <@U0ALICE> because canary of 1.5.0" in took.ephemeral
    refused = await d.chat.ops("scale frontend 5 in production", user="U0BOB")
    assert "frontend in production is locked by <@U0ALICE> because canary of 1.5.0, since " in refused.ephemeral
    assert d.chat.roots() == [] and d.bot.forge.list_prs() == []
    await d.chat.ops("scale frontend 5 in production", user="U0ALICE")
    assert len(d.chat.roots()) == 1  # the holder's own request goes ahead, with its thread


async def test_a_deny_window_refuses_the_merge_button_with_the_window_and_its_end(deploys: Factory, tmp_path: Path) -> None:
    window = {"kind": "deny", "schedule": "0 17 * * 5", "duration": "63h", "timezone": "Europe/Berlin",
              "reason": "weekend freeze"}  # fmt: skip
    repo = fleet_with_config(tmp_path / "fleet-window", production={"agent": PROD_AGENT, "windows": [window]})
    d = await deploys(repo=repo)
    d.bot.policies.clock = lambda: datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # Saturday noon
    await d.chat.ops("scale frontend 5 in production", user="U0ALICE")
    root = d.chat.only_root()
    await d.chat.click(root, "approve", user="U0BOB")
    refused = await d.chat.click(d.chat.only_root(), "merge", user="U0BOB")
    assert 'blocked by the deny window "0 17 * * 5" for 63h (Europe/Berlin) (weekend freeze)' in refused.ephemeral
    assert "until 2026-12-07 07:00 UTC (in 1d 19h)" in refused.ephemeral
    assert d.request_of(root).state is RequestState.APPROVED


async def test_a_gate_result_is_told_in_the_thread(deploys: Factory, tmp_path: Path) -> None:
    from tests.doubles.prometheus import PrometheusDouble, serve_prometheus

    query = 'sum(rate(http_requests_total{env="staging",code=~"5.."}[5m])) < 1'
    gate = {"name": "staging error rate", "prometheus": query, "for": "all"}
    repo = fleet_with_config(tmp_path / "fleet-gate", production={"agent": PROD_AGENT, "gates": [gate]})
    double = PrometheusDouble()
    with serve_prometheus(double) as url:
        d = await deploys(repo=repo, prometheus_url=url)
        double.fail(query, 503, "unavailable", "TSDB not ready")
        await d.chat.ops("scale frontend 5 in production", user="U0ALICE")
        root = d.chat.only_root()
        await d.chat.click(root, "approve", user="U0BOB")
        refused = await d.chat.click(d.chat.only_root(), "merge", user="U0BOB")
        assert "gate staging error rate: unknown (Prometheus refused the query (unavailable): TSDB not ready)" in (
            refused.ephemeral
        )
        double.set(query, "0.2")
        await d.chat.click(d.chat.only_root(), "merge", user="U0BOB")
        assert d.request_of(root).state is RequestState.MERGED
        gates = [t for t in d.chat.thread(root) if "gate staging error rate" in t]
        assert len(gates) == 2 and "unknown" in gates[0] and "pass" in gates[1]


async def test_policies_and_audit_answer_in_slack(deploys: Factory) -> None:
    d = await deploys()
    await d.chat.ops("freeze production for 1h because load test", user="U0CAROL")
    await d.chat.ops("lock cache in production", user="U0ALICE")
    listed = await d.chat.ops("policies production", user="U0BOB")
    assert "freeze by <@U0CAROL> because load test" in listed.ephemeral and "source chat" in listed.ephemeral
    assert "lock of cache by <@U0ALICE>" in listed.ephemeral
    audit = await d.chat.ops("audit in production", user="U0BOB")
    assert "freeze     by U0CAROL" in audit.ephemeral and "lock       by U0ALICE" in audit.ephemeral
    bad = await d.chat.ops("audit since yesterday", user="U0BOB")
    assert '"yesterday" is not a date' in bad.ephemeral
