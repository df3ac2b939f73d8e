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
