"""opsbot in Slack, as people use it: transcripts against the real server and the Slack double.

Everything runs for real on 127.0.0.1: the aiohttp app with Bolt behind `POST /slack/events`
(requests signed with Slack's v0 scheme), the outbox worker, the local forge on a fresh fleet repo
and SQLite. Only Slack is the double (tests/doubles/slack.py), and it refuses what Slack refuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.app import Opsbot
from opsbot.chat.slack import RateLimiter, SlackPoster, SlackTransport, UserGroups, permalink
from opsbot.core.model import Actor, RequestState, Thread, utcnow
from opsbot.errors import PermanentError, TemporaryError
from opsbot.notify.messages import queue_request_event
from opsbot.notify.outbox import CLAIM_SECONDS, OutboxWorker, queue_channel_post, save_root
from opsbot.server import make_app
from opsbot.settings import RbacSettings, Role, load_settings
from tests.doubles.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEAM_DOMAIN,
    SlackApiDouble,
    sign,
    slash_command_body,
)
from tests.plugins.slack import CHANNEL, ChatFactory, SlackChat, fleet_with_config

SCALE = "scale frontend 5 in production"


def open_prs(chat: SlackChat) -> list[Any]:
    return chat.bot.forge.list_prs("open")


def all_prs(chat: SlackChat) -> list[Any]:
    return chat.bot.forge.list_prs("all")


# --------------------------------------------------------------------------------------------- signatures


async def test_signed_slash_command_is_acked_then_run(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    said = await chat.ops(SCALE)
    assert said.status == 200
    assert "Working on `scale frontend 5 in production`" in said.ack
    root = chat.only_root()
    assert "Scale frontend to 5 replicas in production" in root.all_text()
    assert len(open_prs(chat)) == 1


@pytest.mark.parametrize("case", ["wrong secret", "no signature", "stale timestamp", "tampered body"])
async def test_bad_signatures_are_refused_and_nothing_runs(slack_chat: ChatFactory, case: str) -> None:
    chat = await slack_chat()
    double = chat.double
    response_url = double.new_response_url(channel=CHANNEL, user="U0ALICE")
    body = slash_command_body(text=SCALE, response_url=response_url)
    headers = {
        "wrong secret": sign(body, "not-the-signing-secret"),
        "no signature": {"Content-Type": "application/x-www-form-urlencoded"},
        "stale timestamp": sign(body, SIGNING_SECRET, int(time.time()) - 6 * 60),
        "tampered body": sign(body.replace("scale+frontend+5", "scale+frontend+9"), SIGNING_SECRET),
    }[case]
    async with aiohttp.ClientSession() as session, session.post(chat.url, data=body.encode(),
                                                                headers=headers) as resp:
        status = resp.status
    await chat.settle()
    assert status == 401
    assert double.calls == [] and double.hook_posts == [] and double.posted == []
    assert all_prs(chat) == []
    assert chat.store.list_requests() == []


async def test_oversized_body_is_413_before_anything_reads_it(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(max_body_bytes=2048)
    response_url = chat.double.new_response_url(channel=CHANNEL, user="U0ALICE")
    body = slash_command_body(text="status " + "x" * 4000, response_url=response_url)
    sent = await chat.double.send_signed(chat.url, body)
    await chat.settle()
    assert sent.status == 413
    assert chat.double.calls == [] and chat.double.hook_posts == []


async def test_health_and_readiness(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    base = f"http://127.0.0.1:{chat.server.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok")
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"ready": True, "store": True, "forge": True, "slack": True}
        chat.bot.store.close()  # the database went away
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["store"] is False


# --------------------------------------------------------------------------------------------- every command


@pytest.mark.parametrize(
    ("command", "title", "facts"),
    [
        (SCALE, "Scale frontend to 5 replicas in production", "Replicas *3 → 5*"),
        ("promote frontend to production", "Promote frontend from staging to production",
         "ghcr.io/acme/frontend:1.4.2 → ghcr.io/acme/frontend:1.5.0"),
        ("deploy api 2.4.0 to staging", "Deploy api 2.4.0 to staging", "ghcr.io/acme/api:2.3.0 → ghcr.io/acme/api:2.4.0"),
        ("rollback frontend in production", "Roll back frontend in production to 1.4.1",
         "ghcr.io/acme/frontend:1.4.2 → ghcr.io/acme/frontend:1.4.1"),
        ("create cluster edge-1", "Create cluster edge-1", "clusters/edge-1/"),
    ],
)
async def test_proposing_commands_post_one_root_with_buttons(
    slack_chat: ChatFactory, command: str, title: str, facts: str
) -> None:
    chat = await slack_chat()
    said = await chat.ops(command)
    assert said.ephemerals == []  # the root in the channel is the answer
    root = chat.only_root()
    text = root.all_text()
    assert title in text and facts in text
    assert "requested by <@U0ALICE>" in text
    assert "```" in text  # the diff preview
    # the local forge's PRs have no web page, and Slack opens only web links: no Review button
    assert root.action_ids() == ["opsbot_approve", "opsbot_merge", "opsbot_cancel"]
    (request,) = chat.store.list_requests()
    assert (request.channel, request.thread_ts) == (CHANNEL, root.ts)
    assert len(open_prs(chat)) == 1


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("status", "Environments"),
        ("status frontend", "production: ghcr.io/acme/frontend:1.4.2"),
        ("history frontend in production", "History of frontend"),
        ("help", "opsbot commands"),
        ("help scale", "scale <app> <replicas> in <env>"),
    ],
)
async def test_read_only_commands_answer_only_the_asker(slack_chat: ChatFactory, command: str,
                                                        expected: str) -> None:
    chat = await slack_chat()
    said = await chat.ops(command)
    assert expected in said.ephemeral
    assert chat.roots() == []
    assert [c.method for c in chat.double.calls if c.method.startswith("chat.")] == []


async def test_bad_input_is_ephemeral_and_says_what_to_do(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    said = await chat.ops("scale frontend 5 in prodution")
    assert 'Unknown environment "prodution". Did you mean "production"?' in said.ephemeral
    said = await chat.ops("scael frontend 5 in production")
    assert "scale" in said.ephemeral
    said = await chat.ops("approve")
    assert "Say which request" in said.ephemeral
    said = await chat.ops("<!channel> scale frontend")
    (told,) = chat.double.ephemerals(user="U0ALICE")[-1:]
    assert "&lt;!channel&gt;" in told.blocks[0]["text"]["text"]  # shown, never a ping
    said = await chat.ops("")
    assert "opsbot commands" in said.ephemeral  # a bare /ops is help
    assert chat.roots() == [] and all_prs(chat) == []


async def test_typed_merge_answer_shows_a_mention_not_escaped_markup(slack_chat: ChatFactory) -> None:
    """Issue 9 item 10: what Slack receives (not the unescaped reading of it) holds a real mention."""
    chat = await slack_chat()
    await chat.ops(SCALE)
    (req,) = chat.store.list_requests()
    await chat.ops(f"approve {req.id}", user="U0BOB")
    await chat.ops(f"merge {req.id}", user="U0BOB")
    sent = [json.dumps(e.blocks) + e.text for e in chat.double.ephemerals(user="U0BOB")]
    assert any("Merged by <@U0BOB> as " in s for s in sent), sent
    assert not any("&lt;@U0BOB" in s for s in sent), sent


async def test_no_change_is_an_answer_not_a_pr(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    said = await chat.ops("scale frontend 3 in production")  # production already runs 3
    assert "👌" in said.ephemeral
    assert chat.roots() == [] and all_prs(chat) == []


async def test_typed_approve_merge_cancel(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    (req,) = chat.store.list_requests()

    said = await chat.ops(f"approve {req.id}", user="U0BOB")
    assert "Approved by" in said.ephemeral and "U0BOB" in said.ephemeral and "(1/1)" in said.ephemeral
    assert permalink(TEAM_DOMAIN, CHANNEL, root.ts) in said.ephemeral  # a link to the thread
    said = await chat.ops(f"merge {req.id}", user="U0BOB")
    assert "Merged by" in said.ephemeral
    assert chat.thread(root)[0] == "✅ Approved by <@U0BOB>"
    assert chat.thread(root)[1].startswith("🔀 Merged by <@U0BOB> as ")

    await chat.ops("deploy api 2.4.0 to staging", user="U0CAROL")
    other = chat.roots()[-1]
    (staging,) = chat.store.list_requests(env="staging")
    said = await chat.ops(f"cancel {staging.id}", user="U0CAROL")
    assert f"PR #{staging.pr_number} closed" in said.ephemeral
    assert chat.thread(other) == ["🚫 Closed by <@U0CAROL> without merging"]
    assert chat.status(other) == "closed without merging"
    assert other.action_ids() == []


# --------------------------------------------------------------------------------------------- the proposing flow


async def test_request_root_approve_by_another_then_merge(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE, user="U0ALICE")
    root = chat.only_root()
    text = root.all_text()
    assert "📦 *Scale frontend to 5 replicas in production*" in text
    assert "App *frontend* · Env *production* · Replicas *3 → 5*" in text
    assert "PR #1" in text and "needs 1 approval" in text
    assert "overlays/production/kustomization.yaml" in text and "+    count: 5" in text
    assert "✅ YAML" in text and "✅ kustomize build" in text
    assert chat.status(root) == "waiting for approval"

    # four-eyes: the requester's own approval is refused, to her only
    said = await chat.click(root, "approve", user="U0ALICE")
    assert "four-eyes" in said.ephemeral
    assert chat.thread(root) == [] and root.edits == 0
    assert chat.store.approvals("R1") == []

    said = await chat.click(root, "approve", user="U0BOB")
    assert said.ephemerals == []  # the thread says it
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]
    assert chat.status(root) == "approved, ready to merge"
    assert "opsbot_merge" in root.action_ids()

    said = await chat.click(root, "merge", user="U0BOB")
    assert said.ephemerals == []
    merged = chat.store.get_request("R1")
    assert merged.state == RequestState.MERGED
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>", f"🔀 Merged by <@U0BOB> as {merged.merge_sha[:7]}"]
    assert chat.status(root) == f"merged as {merged.merge_sha[:7]}, waiting for the agent to apply it in production"
    assert root.action_ids() == []  # buttons gone
    assert "+    count: 5" in root.all_text()  # the diff stays on the root
    assert chat.bot.forge.get_pr(1).state == "merged"
    # one root, two replies, two root updates: nothing else was posted
    assert [c.method for c in chat.double.calls if c.ok and c.method.startswith("chat.")] == [
        "chat.postMessage", "chat.postMessage", "chat.update", "chat.postMessage", "chat.update"]


async def test_a_push_after_approval_is_told_in_the_thread_and_needs_a_new_approval(
    slack_chat: ChatFactory,
) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    await chat.click(root, "approve", user="U0BOB")
    repo = Path(chat.bot.settings.repo)
    branch = chat.bot.forge.get_pr(1).branch
    # dave pushes to the PR branch by hand: a plain commit on the branch of the local forge
    git = ["git", "-C", str(repo), "-c", "user.name=dave", "-c", "user.email=dave@example.com"]
    tree = subprocess.run([*git, "rev-parse", f"{branch}^{{tree}}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    pushed = subprocess.run([*git, "commit-tree", tree, "-p", branch, "-m", "tweak"], capture_output=True,
                            text=True, check=True).stdout.strip()
    subprocess.run([*git, "update-ref", f"refs/heads/{branch}", pushed], check=True)

    said = await chat.click(root, "merge", user="U0BOB")
    assert said.ephemeral == (f"⚠️ R1 was not merged: PR #1 changed after it was approved ({pushed[:7]} was pushed "
                              "to its branch). It needs approval again.")
    assert chat.bot.forge.get_pr(1).state == "open"
    assert chat.thread(root) == [
        "✅ Approved by <@U0BOB>",
        f"⚠️ dave pushed {pushed[:7]} to the PR branch; approvals are cleared and approval is needed again "
        "before it can merge.",
    ]
    assert chat.status(root) == f"needs approval again: dave pushed {pushed[:7]}"

    await chat.click(root, "approve", user="U0BOB")
    assert chat.status(root) == "approved, ready to merge"
    await chat.click(root, "merge", user="U0BOB")
    merged = chat.store.get_request("R1")
    assert merged.state == RequestState.MERGED and chat.thread(root)[-1].startswith("🔀 Merged by <@U0BOB>")


async def test_merge_before_enough_approvals_is_refused(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    said = await chat.click(root, "merge", user="U0BOB")
    assert "needs 1 approval(s) before it can merge and has 0" in said.ephemeral
    assert chat.thread(root) == [] and chat.bot.forge.get_pr(1).state == "open"


async def test_two_approvals_needed_count_up_on_the_root(slack_chat: ChatFactory, tmp_path: Path) -> None:
    repo = fleet_with_config(tmp_path / "two", production={"approvals": 2})
    chat = await slack_chat(repo=repo)
    await chat.ops(SCALE)
    root = chat.only_root()
    assert chat.status(root) == "waiting for approval (0 of 2)"
    await chat.click(root, "approve", user="U0BOB")
    assert chat.status(root) == "waiting for approval (1 of 2)"
    assert chat.thread(root) == ["✅ Approved by <@U0BOB> (1 of 2 approvals)"]
    await chat.click(root, "approve", user="U0CAROL")
    assert chat.status(root) == "approved, ready to merge"
    assert chat.thread(root)[-1] == "✅ Approved by <@U0CAROL>"


async def test_cancel_button_closes_the_pr(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    await chat.click(root, "cancel", user="U0ALICE")
    assert chat.thread(root) == ["🚫 Closed by <@U0ALICE> without merging"]
    assert root.action_ids() == []
    assert chat.bot.forge.get_pr(1).state == "closed"


async def test_review_button_is_only_acked(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    chat.bot.forge.url = lambda n: f"https://git.example.com/acme/fleet/pull/{n}"  # a forge with web PRs
    await chat.ops(SCALE)
    root = chat.only_root()
    assert root.action_ids()[0] == "opsbot_review"
    calls = len(chat.double.calls)
    said = await chat.click(root, "review", user="U0BOB")
    assert said.status == 200 and said.ephemerals == []
    assert len(chat.double.calls) == calls and chat.thread(root) == []


async def test_superseded_request_is_told_in_its_thread(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    await chat.ops("scale frontend 6 in production", user="U0BOB")
    first, second = chat.roots()
    assert chat.thread(first) == ["♻️ Superseded by <file://" + chat.bot.forge.path + "#pr-2|PR #2>; this PR was closed"]
    assert chat.status(first) == "superseded by a newer request"
    assert first.action_ids() == [] and "opsbot_approve" in second.action_ids()


async def test_github_approvals_mode_points_to_github(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(approvals_mode="github")
    await chat.ops(SCALE)
    root = chat.only_root()
    said = await chat.click(root, "approve", user="U0BOB")
    assert "approve on GitHub: <file://" in said.ephemeral and "|PR #1>" in said.ephemeral
    assert chat.store.approvals("R1") == [] and chat.thread(root) == []


# --------------------------------------------------------------------------------------------- RBAC


def rbac(ttl: int = 300) -> RbacSettings:
    return RbacSettings(
        roles=(
            Role("deployers", frozenset({"*"}), frozenset({"production"})),
            Role("developers", frozenset({"scale", "deploy", "promote", "rollback", "approve", "merge", "cancel"}),
                 frozenset({"dev", "staging"})),
        ),
        members={"deployers": ("group:S0DEPLOY",), "developers": ("U0ALICE", "U0CAROL")},
        protected_envs=frozenset({"production"}),
        group_cache_seconds=ttl,
    )


async def test_rbac_denial_names_the_missing_role(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(rbac=rbac())
    chat.double.add_usergroup("S0DEPLOY", ["U0BOB", "U0DAVE"])
    said = await chat.ops(SCALE, user="U0ALICE")
    assert "You may not `scale` in production: that needs the role deployers, and you have developers" in (
        said.ephemeral)
    assert chat.roots() == [] and all_prs(chat) == []

    await chat.ops(SCALE, user="U0BOB")  # in the user group, resolved through the Web API
    root = chat.only_root()
    lookups = chat.double.calls_to("usergroups.users.list")
    assert [c.params.get("usergroup") for c in lookups] == ["S0DEPLOY"]  # cached for group_cache_seconds

    # buttons are authorized again when clicked: carol is a developer, not a deployer
    said = await chat.click(root, "approve", user="U0CAROL")
    assert "You may not `approve` in production: that needs the role deployers" in said.ephemeral
    assert chat.store.approvals("R1") == [] and chat.thread(root) == []
    said = await chat.click(root, "approve", user="U0DAVE")
    assert chat.thread(root) == ["✅ Approved by <@U0DAVE>"]
    assert len(chat.double.calls_to("usergroups.users.list")) == 1


async def test_clicks_are_reauthorized_with_fresh_group_members(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(rbac=rbac(ttl=0))
    chat.double.add_usergroup("S0DEPLOY", ["U0BOB", "U0DAVE"])
    await chat.ops(SCALE, user="U0BOB")
    root = chat.only_root()
    await chat.click(root, "approve", user="U0DAVE")
    chat.double.add_usergroup("S0DEPLOY", ["U0DAVE"])  # bob left the deployers group
    said = await chat.click(root, "merge", user="U0BOB")
    assert "that needs the role deployers" in said.ephemeral
    assert chat.bot.forge.get_pr(1).state == "open"
    await chat.click(root, "merge", user="U0DAVE")
    assert chat.bot.forge.get_pr(1).state == "merged"


async def test_a_user_group_grants_the_override_role_to_policies_too(slack_chat: ChatFactory) -> None:
    """Policies (locks, freezes) ask RBAC with the same user-group resolver as the dispatcher: a
    release manager known only through a Slack user group may break someone else's lock."""
    chat = await slack_chat(rbac=RbacSettings(
        roles=(Role("team", frozenset({"*"}), frozenset({"*"})),
               Role("release-manager", frozenset({"override"}), frozenset({"*"}))),
        members={"team": ("U0ALICE", "U0BOB", "U0DAVE"), "release-manager": ("group:S0RM",)},
    ))
    chat.double.add_usergroup("S0RM", ["U0DAVE"])
    await chat.ops("lock frontend in staging because load test", user="U0ALICE")
    said = await chat.ops("unlock frontend in staging", user="U0BOB")  # no override role
    assert "only they, or someone with a role that lists `override`" in said.ephemeral
    said = await chat.ops("unlock frontend in staging", user="U0DAVE")  # release manager by group
    assert "unlocked by <@U0DAVE>" in said.ephemeral, said.ephemeral


async def test_a_protected_env_without_roles_is_denied_for_everyone(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(rbac=RbacSettings(protected_envs=frozenset({"production"})))
    said = await chat.ops(SCALE, user="U0ALICE")
    assert "production is protected and no roles are configured" in said.ephemeral
    assert all_prs(chat) == []


async def test_unknown_user_group_grants_nothing(slack_chat: ChatFactory, caplog: pytest.LogCaptureFixture) -> None:
    chat = await slack_chat(rbac=rbac())
    with caplog.at_level(logging.ERROR, logger="opsbot"):
        said = await chat.ops(SCALE, user="U0BOB")  # S0DEPLOY does not exist in this workspace
    assert "that needs the role deployers" in said.ephemeral
    assert "user group S0DEPLOY cannot be resolved (no_such_subteam)" in caplog.text


async def test_a_user_renamed_to_a_members_id_gets_no_role(slack_chat: ChatFactory) -> None:
    """Issue 9 item 5: Slack user names are chosen by their owners; roles match ids only."""
    chat = await slack_chat(rbac=rbac())
    chat.double.add_usergroup("S0DEPLOY", ["U0BOB"])
    sent = await chat.double.send_slash_command(chat.url, SCALE, user_id="U0MALLORY", user_name="group:S0DEPLOY")
    assert sent.status == 200
    await chat.settle()
    sent = await chat.double.send_slash_command(chat.url, "scale frontend 3 in staging", user_id="U0MALLORY",
                                                user_name="U0ALICE")
    await chat.settle()
    denials = chat.ephemerals("U0MALLORY")
    assert len(denials) == 2 and all("and you have no role" in d for d in denials), denials
    assert chat.roots() == [] and all_prs(chat) == []

    await chat.ops(SCALE, user="U0BOB")
    root = chat.only_root()
    await chat.double.send_click(chat.url, root, "opsbot_approve", user_id="U0MALLORY", user_name="U0BOB")
    await chat.settle()
    assert "and you have no role" in chat.ephemerals("U0MALLORY")[-1]
    assert chat.store.approvals("R1") == [] and chat.thread(root) == []


# --------------------------------------------------------------------------------------------- dedup


async def test_slack_retry_of_a_slash_command_runs_once(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    first = await chat.ops(SCALE, trigger_id="1111.2222.retry")
    retry = await chat.ops(SCALE, trigger_id="1111.2222.retry",
                           headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status == retry.status == 200
    assert retry.ack == "" and retry.ephemerals == []
    assert len(chat.roots()) == 1 and len(all_prs(chat)) == 1
    assert len(chat.store.list_requests()) == 1


async def test_the_same_command_again_links_the_existing_thread(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE, user="U0ALICE")
    root = chat.only_root()
    said = await chat.ops(SCALE, user="U0BOB")
    assert "PR #1" in said.ephemeral and "is already open" in said.ephemeral
    assert permalink(TEAM_DOMAIN, CHANNEL, root.ts) in said.ephemeral
    assert len(chat.roots()) == 1 and len(all_prs(chat)) == 1


async def test_concurrent_identical_commands_make_one_pr_and_one_root(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    said = await asyncio.gather(*(chat.ops(SCALE, user=u, settle=False) for u in ("U0ALICE", "U0BOB", "U0CAROL")))
    await chat.settle()
    assert all(s.status == 200 for s in said)
    assert len(chat.roots()) == 1 and len(all_prs(chat)) == 1
    assert len(chat.store.list_requests()) == 1
    already = [e for u in ("U0ALICE", "U0BOB", "U0CAROL") for e in chat.ephemerals(u) if "already open" in e]
    assert len(already) == 2


async def test_double_clicks_approve_once_and_merge_once(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    await asyncio.gather(*(chat.click(root, "approve", user="U0BOB", settle=False) for _ in range(2)))
    await chat.settle()
    assert [a.approver for a in chat.store.approvals("R1")] == ["U0BOB"]
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]
    assert any("You already approved R1" in e for e in chat.ephemerals("U0BOB"))

    clicks = await asyncio.gather(*(chat.click(root, "merge", user=u, settle=False) for u in ("U0BOB", "U0DAVE")))
    await chat.settle()
    assert all(c.status == 200 for c in clicks)
    merges = [t for t in chat.thread(root) if t.startswith("🔀")]
    assert len(merges) == 1
    assert [t.to_state for t in chat.store.transitions("R1")].count(RequestState.MERGED) == 1
    assert any("already merged" in e for u in ("U0BOB", "U0DAVE") for e in chat.ephemerals(u))


async def test_a_redelivered_click_is_dropped(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    payload = chat.double.click(root, "opsbot_approve", user_id="U0BOB")
    body = "payload=" + quote(json.dumps(payload))
    for headers in ({}, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}):
        sent = await chat.double.send_signed(chat.url, body, headers=headers)
        assert sent.status == 200
    await chat.settle()
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]
    assert chat.ephemerals("U0BOB") == []  # not even "you already approved"


# --------------------------------------------------------------------------------------------- Slack refusing


async def test_ratelimited_root_post_waits_retry_after_and_posts_once(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    waits: list[float] = []
    limiter = chat.transport.limiter
    real_sleep = limiter.sleep

    async def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(seconds)

    limiter.sleep = recording_sleep
    chat.double.rate_limit("chat.postMessage", times=1, retry_after=1)
    await chat.ops(SCALE)
    posts = chat.double.calls_to("chat.postMessage")
    assert [c.status for c in posts] == [429, 200]
    assert len(chat.roots()) == 1
    assert waits and max(waits) > 0.5  # the 1 s Retry-After, minus the time the 429 took to arrive


async def test_ratelimited_thread_reply_is_retried_in_order(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    chat.double.rate_limit("chat.postMessage", times=1, retry_after=1)
    await chat.click(root, "approve", user="U0BOB")
    await chat.click(root, "merge", user="U0BOB")
    await chat.double.wait_for(lambda: len(chat.thread(root)) == 2, timeout=15, what="both replies")
    await chat.settle()
    sha = chat.store.get_request("R1").merge_sha[:7]
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>", f"🔀 Merged by <@U0BOB> as {sha}"]  # no loss, no dup
    key, delay, error = chat.transport.worker.retries[0]
    assert key.endswith(":reply") and "ratelimited" in error and delay >= 1  # Retry-After honoured
    assert [c.status for c in chat.double.calls_to("chat.postMessage")] == [200, 429, 200, 200]


async def test_server_errors_are_retried(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    chat.transport.worker.base_delay = 0.05
    chat.double.fail_next("chat.postMessage", 503)
    await chat.click(root, "approve", user="U0BOB")
    await chat.double.wait_for(lambda: chat.thread(root), timeout=10, what="the reply")
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]


async def test_not_in_channel_gets_an_invite_hint_then_works(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    chat.double.set_channel_error("C0PRIV", "not_in_channel")
    said = await chat.ops(SCALE, channel="C0PRIV")
    assert "Invite me with `/invite @opsbot`" in said.ephemeral and "PR #1" in said.ephemeral
    assert chat.roots("C0PRIV") == []
    assert chat.store.get_request("R1").thread_ts == ""

    chat.double.set_channel_error("C0PRIV", None)  # someone invited the bot
    said = await chat.ops(SCALE, channel="C0PRIV")
    assert said.ephemerals == []
    root = chat.only_root("C0PRIV")
    assert chat.store.get_request("R1").thread_ts == root.ts
    assert len(all_prs(chat)) == 1
    await chat.click(root, "approve", user="U0BOB")
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]


async def test_channel_not_found_is_permanent_and_told(slack_chat: ChatFactory,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    chat = await slack_chat()
    chat.double.set_channel_error("C0GONE", "channel_not_found")
    with caplog.at_level(logging.ERROR, logger="opsbot"):
        said = await chat.ops(SCALE, channel="C0GONE")
    assert "Slack refused my message (`channel_not_found`)" in said.ephemeral
    assert len(chat.double.calls_to("chat.postMessage")) == 1  # permanent: not retried
    assert "Slack refused chat.postMessage for channel C0GONE: channel_not_found" in caplog.text


async def test_invalid_auth_is_permanent_and_the_token_never_logged(
    slack_double: SlackApiDouble, caplog: pytest.LogCaptureFixture
) -> None:
    token = "xoxb-9999-not-a-real-token"
    poster = SlackPoster(AsyncWebClient(token=token, base_url=slack_double.api_url), RateLimiter())
    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentError, match="invalid_auth"):
        await poster.post(CHANNEL, "hello", retries=3)
    assert len(slack_double.calls) == 1
    assert "check SLACK_BOT_TOKEN" in caplog.text
    assert token not in caplog.text and "xoxb-" not in caplog.text


async def test_poster_maps_slack_answers(slack_double: SlackApiDouble) -> None:
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())
    slack_double.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(TemporaryError) as exc:
        await poster.post(CHANNEL, "hello")
    assert exc.value.retry_after == 7
    assert poster.limiter.delay("chat.postMessage", CHANNEL) > 6  # every caller now waits for Retry-After
    slack_double.fail_next("chat.update", 502)
    with pytest.raises(TemporaryError):
        await poster.update(CHANNEL, "1.2", "x")
    with pytest.raises(PermanentError, match="message_not_found"):
        await poster.update(CHANNEL, "1.2", "x")


# --------------------------------------------------------------------------------------------- the outbox


def _bot(repo: Path, double: SlackApiDouble) -> tuple[Opsbot, Any]:
    settings = load_settings(environ={}, repo=str(repo), slack_bot_token=BOT_TOKEN,
                             slack_signing_secret=SIGNING_SECRET, slack_api_url=double.api_url)
    return Opsbot(settings), settings


async def test_items_queued_before_a_crash_are_posted_once_after_restart(
    slack_double: SlackApiDouble, tmp_path: Path
) -> None:
    repo = fleet_with_config(tmp_path / "fleet")
    bot, settings = _bot(repo, slack_double)
    transport = SlackTransport(bot, settings, bot.store)  # its worker is never started: we "crash" first
    from aiohttp.test_utils import TestServer

    server = TestServer(make_app(bot, settings, slack=transport), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/slack/events"))
    await slack_double.send_slash_command(url, SCALE)
    await transport.idle()
    root = slack_double.messages(CHANNEL)[0]
    await slack_double.send_click(url, root, "opsbot_approve", user_id="U0BOB")
    await slack_double.send_click(url, root, "opsbot_merge", user_id="U0BOB")
    await transport.idle()
    assert slack_double.replies(CHANNEL, root.ts) == [] and root.edits == 0  # queued, not posted
    await server.close()
    await transport.close()
    transport.worker.close()
    bot.close()  # the crash: nothing flushed

    bot, settings = _bot(repo, slack_double)  # the restart, on the same database
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())
    worker = OutboxWorker(bot.store, poster)
    assert await worker.drain_until_idle() == 4  # two replies, two root updates
    assert await OutboxWorker(bot.store, poster).drain_until_idle() == 0  # and never again
    sha = bot.store.get_request("R1").merge_sha[:7]
    assert [m.text for m in slack_double.replies(CHANNEL, root.ts)] == [
        "✅ Approved by <@U0BOB>", f"🔀 Merged by <@U0BOB> as {sha}"]
    assert root.action_ids() == [] and root.edits == 2
    worker.close()
    bot.close()


async def test_the_unavoidable_window_posts_again_after_restart(slack_double: SlackApiDouble, tmp_path: Path) -> None:
    """Killed after Slack accepted a post and before `outbox_done` committed: posted twice (documented)."""
    repo = fleet_with_config(tmp_path / "fleet")
    bot, _settings = _bot(repo, slack_double)
    assert queue_channel_post(bot.store, "deploy:1", "C0DEPLOY", {"text": "🚀 production", "blocks": []})
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())

    class Crash(BaseException):
        pass

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    crashing = OutboxWorker(bot.store, poster)
    real_done = bot.store.outbox_done
    bot.store.outbox_done = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await crashing.drain_once()
    bot.store.outbox_done = real_done  # type: ignore[method-assign]
    # the dead worker still holds its claim: a restarted one waits for it to run out, then posts
    assert await OutboxWorker(bot.store, poster).drain_until_idle() == 0
    later = OutboxWorker(bot.store, poster, clock=lambda: utcnow() + timedelta(seconds=CLAIM_SECONDS + 1))
    assert await later.drain_until_idle() == 1
    assert [m.text for m in slack_double.messages("C0DEPLOY")] == ["🚀 production", "🚀 production"]
    assert bot.store.outbox_result("deploy:1") == {"channel": "C0DEPLOY", "ts": slack_double.messages("C0DEPLOY")[1].ts}
    bot.close()


async def test_dedup_keys_queue_a_transition_once(slack_double: SlackApiDouble, tmp_path: Path) -> None:
    bot, _settings = _bot(fleet_with_config(tmp_path / "fleet"), slack_double)
    bot.handle(SCALE, Actor("U0ALICE", "alice"), Thread(CHANNEL))
    req = bot.store.get_request("R1")
    facts = {"by": "U0BOB", "sha": "1a2b3c4d"}
    assert len(queue_request_event(bot.store, req, "merged", facts)) == 2
    assert queue_request_event(bot.store, req, "merged", facts) == []  # a redelivered webhook
    assert len(queue_request_event(bot.store, req, "merged", {**facts, "sha": "ffff"})) == 2
    bot.close()


async def test_worker_gives_up_after_bounded_attempts(slack_double: SlackApiDouble, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bot, _settings = _bot(fleet_with_config(tmp_path / "fleet"), slack_double)
    queue_channel_post(bot.store, "deploy:9", "C0DEPLOY", {"text": "🚀 production", "blocks": []})
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())
    worker = OutboxWorker(bot.store, poster, max_attempts=3, base_delay=0.01, max_delay=0.05)
    slack_double.fail_next("chat.postMessage", 500, times=10)
    with caplog.at_level(logging.ERROR, logger="opsbot"):
        for _ in range(200):
            await worker.drain_once()
            if bot.store.outbox_result("deploy:9") is not None:
                break
            await asyncio.sleep(0.02)
    assert bot.store.outbox_result("deploy:9")["outcome"] == "gave-up"  # type: ignore[index]
    assert len(slack_double.calls_to("chat.postMessage")) == 3
    assert "giving up on deploy:9 (channel_post) after 3 attempts" in caplog.text
    assert [d for _k, d, _e in worker.retries] == sorted(d for _k, d, _e in worker.retries)
    worker.close()
    bot.close()


async def test_channel_posts_go_to_the_env_channel(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(deploy_channel="C0DEPLOY", env_channels={"production": "C0PRODDEPLOY"})
    assert chat.transport.channel_for_env("production") == "C0PRODDEPLOY"
    assert chat.transport.channel_for_env("staging") == "C0DEPLOY"
    queue_channel_post(chat.store, "R1:deployed:x:channel", chat.transport.channel_for_env("production"),
                       {"text": "🚀 production · frontend replicas 3 → 5", "blocks": []})
    chat.transport.worker.wake()
    await chat.double.wait_for(lambda: chat.double.messages("C0PRODDEPLOY"), what="the deploy line")
    assert [m.text for m in chat.double.messages("C0PRODDEPLOY")] == ["🚀 production · frontend replicas 3 → 5"]


async def test_deploy_events_from_the_notifier_reach_thread_and_root(slack_chat: ChatFactory) -> None:
    """The deploy notifier's path: queue_request_event with the agent's facts, after the transition."""
    chat = await slack_chat()
    await chat.ops(SCALE)
    root = chat.only_root()
    await chat.click(root, "approve", user="U0BOB")
    await chat.click(root, "merge", user="U0BOB")
    req = chat.store.get_request("R1")
    moved = chat.store.transition("R1", RequestState.DEPLOYED, "flux", "applied")
    queue_request_event(chat.store, moved, "deployed", {
        "env": "production", "agent": "flux", "agent_kind": "Kustomization", "agent_name": "apps",
        "sha": req.merge_sha, "since_merge": 102})
    chat.transport.worker.wake()
    await chat.double.wait_for(lambda: len(chat.thread(root)) == 3, what="the deploy reply")
    await chat.settle()
    assert chat.thread(root)[-1] == (f"🚀 Live in production — Flux kustomization apps applied {req.merge_sha[:7]}, "
                                     "1m 42s after merge")
    assert chat.status(root) == "live in production"


# --------------------------------------------------------------------------------------------- shutdown


async def test_shutdown_finishes_acked_work_and_refuses_new(slack_chat: ChatFactory) -> None:
    chat = await slack_chat()
    chat.double.set_delay("chat.postMessage", 0.3)
    said = await chat.ops(SCALE, settle=False)
    assert said.status == 200
    chat.transport.stop_accepting()
    refused = await chat.ops("status", user="U0BOB", settle=False)
    assert "restarting" in refused.ack
    await chat.server.stop()
    assert len(chat.roots()) == 1  # the acknowledged command finished before the stop returned
    assert chat.ephemerals("U0BOB") == []


# --------------------------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_command_click_disconnect_and_reconnect(slack_chat: ChatFactory) -> None:
    chat = await slack_chat(socket=True)
    double = chat.double
    await double.wait_for(lambda: double.open_socket_connections, what="a Socket Mode connection")
    first = double.socket_connections[0]
    assert first.sent[0]["type"] == "hello"
    assert [c.token for c in double.calls_to("apps.connections.open")] == [chat.server.settings.slack_app_token.get()]

    async with aiohttp.ClientSession() as session, session.post(chat.url, data=b"x") as resp:
        assert resp.status == 404  # no signing secret: nothing is served over HTTP

    ack = await double.push_slash_command(SCALE, user_id="U0ALICE", user_name="alice")
    assert ack["envelope_id"] == first.sent[-1]["envelope_id"]
    assert "Working on `scale frontend 5 in production`" in ack["payload"]["text"]
    await chat.settle()
    root = chat.only_root()
    assert "opsbot_approve" in root.action_ids()

    ack = await double.push_click(root, "opsbot_approve", user_id="U0BOB")
    assert ack["envelope_id"] == first.sent[-1]["envelope_id"] and "payload" not in ack
    await chat.settle()
    assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]

    await double.send_disconnect("refresh_requested")
    await double.wait_for(
        lambda: len(double.socket_connections) == 2 and len(double.open_socket_connections) == 1,
        timeout=15, what="the reconnect")
    second = double.socket_connections[1]
    assert second.sent[0]["type"] == "hello"
    ack = await double.push_slash_command("help", user_id="U0CAROL", user_name="carol")
    assert ack["envelope_id"] == second.sent[-1]["envelope_id"]
    await chat.settle()
    assert any("opsbot commands" in e for e in chat.ephemerals("U0CAROL"))

    await double.drop_socket_connections()  # network loss: the client notices and reconnects
    await double.wait_for(lambda: len(double.socket_connections) == 3 and double.open_socket_connections,
                          timeout=30, what="the reconnect after a drop")
    ack = await double.push_click(root, "opsbot_merge", user_id="U0BOB")
    await chat.settle()
    assert chat.thread(root)[-1].startswith("🔀 Merged by <@U0BOB>")


# --------------------------------------------------------------------------------------------- limiter and groups


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_limiter_paces_chat_post_message_per_channel() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_channel_rate=1.0, per_channel_burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await limiter.acquire("chat.postMessage", "C1")
    assert clock.slept == [pytest.approx(1.0), pytest.approx(1.0)]  # a burst of 3, then 1 per second
    await limiter.acquire("chat.postMessage", "C2")  # another channel has its own budget
    assert len(clock.slept) == 2


async def test_limiter_tiers_and_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await limiter.acquire("usergroups.users.list")  # Tier 2: 20/min, burst 4
    await limiter.acquire("usergroups.users.list")
    assert clock.slept == [pytest.approx(3.0)]
    limiter.penalize("chat.update", 30)
    await limiter.acquire("chat.update")
    assert clock.slept[-1] == pytest.approx(30.0)
    await limiter.acquire("chat.postEphemeral")  # a 429 on one method does not hold the others
    assert len(clock.slept) == 2


async def test_outbox_backoff_is_bounded_and_honours_retry_after(slack_double: SlackApiDouble,
                                                                 tmp_path: Path) -> None:
    bot, _settings = _bot(fleet_with_config(tmp_path / "fleet"), slack_double)
    worker = OutboxWorker(bot.store, SlackPoster(AsyncWebClient(), RateLimiter()), base_delay=1, max_delay=60)
    delays = [worker.backoff(n) for n in range(12)]
    assert all(d >= 0.75 for d in delays) and max(delays) <= 60
    assert delays[3] > delays[0]
    assert worker.backoff(0, retry_after=30) >= 30
    worker.close()
    bot.close()


async def test_user_group_cache_expires(slack_double: SlackApiDouble) -> None:
    clock = FakeClock()
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())
    groups = UserGroups(poster, 60, clock=clock)
    slack_double.add_usergroup("S0OPS", ["U0BOB"])
    await groups.refresh(["S0OPS"])
    assert groups.members("S0OPS") == {"U0BOB"}
    slack_double.add_usergroup("S0OPS", ["U0BOB", "U0DAVE"])
    await groups.refresh(["S0OPS"])
    assert groups.members("S0OPS") == {"U0BOB"}  # still cached
    clock.now += 61
    await groups.refresh(["S0OPS"])
    assert groups.members("S0OPS") == {"U0BOB", "U0DAVE"}
    slack_double.fail_next("usergroups.users.list", 503)
    clock.now += 61
    await groups.refresh(["S0OPS"])
    assert groups.members("S0OPS") == {"U0BOB", "U0DAVE"}  # Slack down: the last known members
    assert len(slack_double.calls_to("usergroups.users.list")) == 3
    assert groups.members("S0NEVER") == frozenset()


async def test_replies_wait_for_a_root_still_being_posted(slack_double: SlackApiDouble, tmp_path: Path) -> None:
    bot, _settings = _bot(fleet_with_config(tmp_path / "fleet"), slack_double)
    bot.handle(SCALE, Actor("U0ALICE", "alice"), Thread(CHANNEL))  # asked in chat; its root is not posted yet
    queue_request_event(bot.store, bot.store.get_request("R1"), "closed", {"by": "U0ALICE"})
    poster = SlackPoster(AsyncWebClient(token=BOT_TOKEN, base_url=slack_double.api_url), RateLimiter())
    later = [timedelta(0)]  # the worker's clock runs with real time, and jumps when we say so
    worker = OutboxWorker(bot.store, poster, base_delay=0.01, max_delay=0.02, clock=lambda: utcnow() + later[0])
    assert await worker.drain_once() == 0
    assert slack_double.posted == [] and "not posted yet" in worker.retries[0][2]

    ts = await poster.post(CHANNEL, "the root")
    save_root(bot.store, "R1", CHANNEL, ts, [])
    later[0] = timedelta(seconds=1)  # past the retry delay, without sleeping through it
    assert await worker.drain_until_idle() == 2
    assert [m.text for m in slack_double.replies(CHANNEL, ts)] == ["🚫 Closed by <@U0ALICE> without merging"]
    assert slack_double.message(CHANNEL, ts).edits == 1

    # a request asked outside chat (CLI) has no thread: its notifications are skipped, not retried
    bot.handle("deploy api 2.4.0 to staging", Actor("alice", "alice", "cli"))
    queue_request_event(bot.store, bot.store.get_request("R2"), "closed", {"by": "alice"})
    assert await worker.drain_until_idle() == 2
    assert [o for _k, _kind, o in worker.finished][-2:] == ["skipped", "skipped"]
    worker.close()
    bot.close()


def test_only_the_slack_package_imports_slack_libraries() -> None:
    """The notifier, the server and everything else stay free of slack_bolt/slack_sdk (DESIGN §6)."""
    import ast

    root = Path(__file__).resolve().parents[2]
    importers = []
    for path in sorted([*(root / "opsbot").rglob("*.py"), *(root / "commands").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("slack_bolt", "slack_sdk") for n in names):
                importers.append(path.relative_to(root).as_posix())
    # the poster (Web API) and the transport (Bolt); the limiter and the group cache need neither
    assert sorted(set(importers)) == ["opsbot/chat/slack/poster.py", "opsbot/chat/slack/transport.py"]
