"""`POST /webhooks/github` of a real bot (store, requests, GitHub forge and mirror on the double),
fed the double's signed deliveries: what is accepted, what is refused, and that a refusal changes
nothing, down to fuzzed bodies and headers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import event as event_label
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from opsbot.app import Opsbot
from opsbot.core.model import Actor, RequestState, utcnow
from opsbot.intake.github_routes import PATH, Coalescer, GitHubWebhooks
from opsbot.settings import Secret, Settings
from tests.doubles.github import GitHubDouble, RunningDouble
from tests.plugins.github import TOKEN, WEBHOOK_SECRET, ServedApp, serve_app_in_thread

MAX_BODY = 256 * 1024
CONFIG_WITH_APPROVALS = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production: {path: overlays/production, promote_from: staging, approvals: 1}
"""
SCALE = "scale frontend 5 in production"


@pytest.fixture
def settings(fleet_server: RunningDouble, tmp_path: Path) -> Settings:
    return Settings(
        forge="github",
        state_dir=str(tmp_path / "state"),
        github_api_url=fleet_server.api_url,
        github_repository=fleet_server.double.full_name,
        github_token=Secret(TOKEN),
        github_webhook_secret=Secret(WEBHOOK_SECRET),
        deploy_channel="CDEPLOY",
        approvals_mode="github",
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture
def bot(settings: Settings) -> Iterator[Opsbot]:
    b = Opsbot(settings)
    try:
        yield b
    finally:
        b.close()


def propose(bot: Opsbot, command: str = SCALE, user: str = "alice") -> tuple[str, int]:
    result: Any = bot.handle(command, Actor(user, user, "cli"))
    assert result.request is not None and result.pr is not None, result.text()
    return result.request.id, result.pr.number


class Hook:
    """The route on the test's loop, and deliveries built by the double exactly as GitHub sends them."""

    def __init__(self, bot: Opsbot, settings: Settings, client: Any, double: GitHubDouble) -> None:
        self.bot, self.settings, self.client, self.double = bot, settings, client, double

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(PATH, data=body, headers=headers)
        raw = await resp.read()
        return resp.status, (json.loads(raw) if resp.content_type == "application/json" else {})

    async def send(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        secret: str = WEBHOOK_SECRET,
    ) -> tuple[int, dict[str, Any]]:
        headers, body = self.double.webhook_request(event, payload, secret, delivery)
        return await self.post(body, headers)

    def pr(self, number: int, action: str = "closed") -> dict[str, Any]:
        assert self.double.public_api_url
        return self.double.pull_request_payload(self.double.public_api_url, number, action)

    def review(self, number: int) -> dict[str, Any]:
        assert self.double.public_api_url
        return self.double.review_payload(self.double.public_api_url, number)

    def push(self, before: str, after: str) -> dict[str, Any]:
        assert self.double.public_api_url
        return self.double.push_payload(self.double.public_api_url, "main", before, after)


async def make_hook(bot: Opsbot, settings: Settings, aiohttp_client: Any, double: GitHubDouble) -> Any:
    hooks = GitHubWebhooks(bot, settings)
    app = web.Application()
    app.add_routes(hooks.routes())
    client = await aiohttp_client(app)
    return hooks, Hook(bot, settings, client, double)


def state(bot: Opsbot) -> Any:
    """Everything a delivery could change, as comparable data."""
    store = bot.store
    reqs = store.list_requests(limit=500)
    return (
        [(r.id, r.state, r.merge_sha) for r in reqs],
        [len(store.transitions(r.id)) for r in reqs],
        [[a.approver for a in store.approvals(r.id)] for r in reqs],
        [(i.source, i.key) for i in store.inbox_pending(limit=1000)],
        [(i.key, i.kind) for i in store.outbox_due(utcnow(), limit=1000)],
        bot.repo.resolve("main"),
    )


# ------------------------------------------------------------------------------------------- accepted


async def test_a_signed_merge_moves_the_request_to_merged_with_the_merge_sha(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    _hooks, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    sha = fleet_double.merge_by_hand(number, user="bob")
    status, body = await hook.send("pull_request", hook.pr(number))
    assert (status, body) == (200, {"ok": True, "result": "merged", "request": rid})
    req = bot.store.get_request(rid)
    assert req and (req.state, req.merge_sha) == (RequestState.MERGED, sha)
    assert bot.store.inbox_pending() == []  # marked done


async def test_closed_without_merge_closes_the_request(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.close_by_hand(number, user="carol")
    status, body = await hook.send("pull_request", hook.pr(number))
    assert (status, body["result"]) == (200, "closed")
    req = bot.store.get_request(rid)
    assert req and req.state == RequestState.CLOSED
    assert bot.store.transitions(rid)[-1].actor == "carol"


async def test_ping_is_answered_and_form_encoded_deliveries_are_understood(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    status, body = await hook.send("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert (status, body) == (200, {"ok": True, "pong": True})

    fleet_double.merge_by_hand(number)
    form = urllib.parse.urlencode({"payload": json.dumps(hook.pr(number))}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": GitHubDouble.sign(WEBHOOK_SECRET, form),
    }
    status, body = await hook.post(form, headers)
    assert (status, body["result"]) == (200, "merged")
    req = bot.store.get_request(rid)
    assert req and req.state == RequestState.MERGED


# ------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "forge_headers",
    [
        pytest.param(lambda h, b: h.pop("X-Hub-Signature-256"), id="missing"),
        pytest.param(
            lambda h, b: h.update({"X-Hub-Signature-256": GitHubDouble.sign("wrong", b)}), id="wrong-secret"
        ),
        pytest.param(
            lambda h, b: h.update({"X-Hub-Signature-256": GitHubDouble.sign(WEBHOOK_SECRET, b + b" ")}),
            id="other-body",
        ),
        pytest.param(lambda h, b: h.update({"X-Hub-Signature-256": "sha256="}), id="empty"),
        pytest.param(lambda h, b: h.update({"X-Hub-Signature-256": h["X-Hub-Signature"]}), id="sha1-only"),
        pytest.param(
            lambda h, b: h.update({"X-Hub-Signature-256": h["X-Hub-Signature-256"].upper()}),
            id="mangled-case",
        ),
    ],
)
async def test_a_bad_or_missing_signature_is_401_and_changes_nothing(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble, forge_headers: Any
) -> None:
    _rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.merge_by_hand(number)
    before = state(bot)
    delivery = str(uuid.uuid4())
    headers, body = fleet_double.webhook_request("pull_request", hook.pr(number), WEBHOOK_SECRET, delivery)
    forge_headers(headers, body)
    status, answer = await hook.post(body, headers)
    assert (status, answer) == (401, {"error": "bad signature"})
    assert state(bot) == before

    # the refused delivery left no trace: the genuine one with the same id is processed, not a duplicate
    status, answer = await hook.send("pull_request", hook.pr(number), delivery=delivery)
    assert (status, answer["result"]) == (200, "merged")


async def test_without_a_secret_every_delivery_is_refused(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    _rid, number = await asyncio.to_thread(propose, bot)
    unset = dataclasses.replace(settings, github_webhook_secret=Secret(""))
    _, hook = await make_hook(bot, unset, aiohttp_client, fleet_double)
    fleet_double.merge_by_hand(number)
    before = state(bot)
    for secret in ("", WEBHOOK_SECRET):
        status, answer = await hook.send("pull_request", hook.pr(number), secret=secret)
        assert (status, answer) == (401, {"error": "webhook secret not configured"})
    headers, body = fleet_double.webhook_request("pull_request", hook.pr(number), WEBHOOK_SECRET)
    del headers["X-Hub-Signature-256"]
    assert (await hook.post(body, headers))[0] == 401
    assert state(bot) == before


async def test_unknown_events_and_actions_are_204_and_not_stored(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    _rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    before = state(bot)
    delivery = str(uuid.uuid4())
    other_repo = hook.pr(number)
    other_repo["repository"] = {**other_repo["repository"], "full_name": "acme/other"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("issues", {"action": "opened", "issue": {"number": number}}),
        ("check_run", {"action": "completed"}),
        ("pull_request", hook.pr(number, "opened")),  # opsbot opened it; nothing to learn
        ("pull_request", hook.pr(number, "edited")),
        ("pull_request", other_repo),  # same number, another repository of the organisation
        ("installation", {"action": "created"}),
        ("", {}),
    ]
    fleet_double.merge_by_hand(number)
    other_repo = hook.pr(number)
    other_repo["repository"] = {**other_repo["repository"], "full_name": "acme/other"}
    cases.append(("pull_request", other_repo))
    for event, payload in cases:
        status, answer = await hook.send(event, payload, delivery=delivery)
        assert (status, answer) == (204, {}), event
    assert state(bot) == before
    status, answer = await hook.send("pull_request", hook.pr(number), delivery=delivery)
    assert answer["result"] == "merged"  # the id was never stored by the ignored deliveries


async def test_a_signed_body_that_is_not_json_is_400(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    before = state(bot)
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'):
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": GitHubDouble.sign(WEBHOOK_SECRET, body),
        }
        assert (await hook.post(body, headers))[0] == 400
    assert state(bot) == before


# ------------------------------------------------------------------------------------------- size


async def _raw_exchange(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand (never finishing the body) and read the status line GitHub would see."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
        # the server may stop listening once it has answered; the answer is what counts
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()


async def test_an_oversize_body_is_413_without_reading_it(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    _rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.merge_by_hand(number)
    before = state(bot)
    payload = hook.pr(number)
    payload["padding"] = "x" * MAX_BODY  # a genuine, signed delivery, only too big
    status, answer = await hook.send("pull_request", payload)
    assert (status, answer) == (413, {"error": f"body larger than {MAX_BODY} bytes"})

    port = hook.client.server.port
    # a Content-Length beyond the cap is refused before any byte of the body arrives
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: pull_request\r\nContent-Length: {10**9}\r\n\r\n"
    ).encode()
    assert (await _raw_exchange(port, head, [])).startswith(b"HTTP/1.1 413")
    # chunked, without a length: refused once the cap is crossed, although the body never ends
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "X-GitHub-Event: pull_request\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 2)
    assert (await _raw_exchange(port, head, chunks)).startswith(b"HTTP/1.1 413")

    # exactly at the cap is fine (the size check is not off by one)
    small = hook.pr(number)
    raw = json.dumps(small, separators=(",", ":")).encode()
    small["padding"] = "x" * (MAX_BODY - len(raw) - len(',"padding":""'))
    headers, body = fleet_double.webhook_request("pull_request", small, WEBHOOK_SECRET)
    assert len(body) == MAX_BODY
    assert state(bot) == before
    status, answer = await hook.post(body, headers)
    assert (status, answer["result"]) == (200, "merged")


# ------------------------------------------------------------------------------------------- dedup


async def test_a_redelivered_merge_is_processed_once(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.merge_by_hand(number)
    delivery = str(uuid.uuid4())
    first = await hook.send("pull_request", hook.pr(number), delivery=delivery)
    after_first = state(bot)
    second = await hook.send("pull_request", hook.pr(number), delivery=delivery)
    assert first == (200, {"ok": True, "result": "merged", "request": rid})
    assert second == (200, {"ok": True, "result": "duplicate"})
    assert state(bot) == after_first


async def test_a_redelivered_push_fetches_once(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    hooks, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    before = fleet_double.branch_sha("main")
    assert before
    after = fleet_double.commit_files("main", {"README.md": "pushed by hand\n"}, author="dave")
    delivery = str(uuid.uuid4())
    assert (await hook.send("push", hook.push(before, after), delivery=delivery))[1][
        "result"
    ] == "refresh-scheduled"
    await hooks.refresher.idle()
    assert (await hook.send("push", hook.push(before, after), delivery=delivery))[1]["result"] == "duplicate"
    await hooks.refresher.idle()
    assert hooks.refresher.runs == 1


# ------------------------------------------------------------------------------------------- reviews


async def test_an_approving_review_is_recorded_once_and_never_the_requesters(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot, SCALE, "alice")
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)

    fleet_double.add_review(number, "alice")
    assert (await hook.send("pull_request_review", hook.review(number)))[1]["result"] == "unchanged"
    fleet_double.add_review(number, "bob", "COMMENTED")
    assert (await hook.send("pull_request_review", hook.review(number)))[0] == 204
    assert bot.store.approvals(rid) == []

    fleet_double.add_review(number, "bob")
    status, answer = await hook.send("pull_request_review", hook.review(number))
    assert (status, answer["result"]) == (200, "approval-recorded")
    fleet_double.add_review(number, "bob", body="looked again")
    assert (await hook.send("pull_request_review", hook.review(number)))[1]["result"] == "unchanged"
    assert [(a.approver, a.source) for a in bot.store.approvals(rid)] == [("bob", "github")]
    req = bot.store.get_request(rid)
    assert req and req.state == RequestState.APPROVED  # production needs no more than one here


async def test_a_push_by_someone_else_clears_the_approval_and_a_review_counts_for_its_commit(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    fleet_double.commit_files("main", {".opsbot.yaml": CONFIG_WITH_APPROVALS}, message="production needs 1")
    await asyncio.to_thread(bot.forge.refresh)  # type: ignore[attr-defined]
    rid, number = await asyncio.to_thread(propose, bot, SCALE, "alice")
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.add_review(number, "bob")
    reviewed = hook.review(number)
    assert (await hook.send("pull_request_review", reviewed))[1]["result"] == "approval-recorded"
    approved = bot.store.get_request(rid)
    assert approved and (approved.state, approved.approvals_needed) == (RequestState.APPROVED, 1)

    # dave pushes to the PR branch; GitHub says `synchronize`, sent by dave
    (pull,) = fleet_double.open_pulls()
    before = fleet_double.branch_sha(pull.head)
    after = fleet_double.commit_files(pull.head, {"README.md": "dave was here\n"}, author="dave")
    sync = {**fleet_double.pull_request_payload(fleet_double.public_api_url or "", number, "synchronize", "dave"),
            "before": before, "after": after}
    assert (await hook.send("pull_request", sync))[1]["result"] == "approvals-cleared"
    assert (await hook.send("pull_request", sync))[1]["result"] == "unchanged"  # a redelivery
    req = bot.store.get_request(rid)
    assert req and (req.state, req.head_sha) == (RequestState.PROPOSED, after)
    assert bot.store.approvals(rid) == []
    last = bot.store.transitions(rid)[-1]
    assert (last.from_state, last.to_state, last.actor) == (RequestState.APPROVED, RequestState.PROPOSED, "dave")

    refused: Any = await asyncio.to_thread(bot.handle, f"merge {rid}", Actor("bob", "bob", "cli"))
    assert "needs 1 approval(s) before it can merge and has 0" in refused.text()
    # bob's review was for the old commit: redelivered, it does not count for the new head
    assert (await hook.send("pull_request_review", reviewed))[1]["result"] == "unchanged"
    fleet_double.add_review(number, "bob", body="read dave's commit too")
    assert (await hook.send("pull_request_review", hook.review(number)))[1]["result"] == "approval-recorded"
    merged: Any = await asyncio.to_thread(bot.handle, f"merge {rid}", Actor("bob", "bob", "cli"))
    assert merged.request.state == RequestState.MERGED, merged.text()
    assert fleet_double.repo.read_commit(merged.request.merge_sha)["parents"][1] == after


async def test_reviews_are_ignored_when_approvals_are_given_in_chat(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    chat = dataclasses.replace(settings, approvals_mode="chat")
    _, hook = await make_hook(bot, chat, aiohttp_client, fleet_double)
    fleet_double.add_review(number, "bob")
    assert (await hook.send("pull_request_review", hook.review(number)))[0] == 204
    assert bot.store.approvals(rid) == []


# ------------------------------------------------------------------------------------------- push


async def test_a_push_refreshes_the_mirror_in_the_background(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    hooks, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    before = bot.repo.resolve("main")
    after = fleet_double.commit_files("main", {"README.md": "pushed by hand\n"}, author="dave")
    assert bot.repo.resolve("main") == before  # the mirror does not know yet
    status, answer = await hook.send("push", hook.push(before, after))
    assert (status, answer["result"]) == (200, "refresh-scheduled")
    await hooks.refresher.idle()
    assert bot.repo.resolve("main") == after
    assert bot.repo.snapshot("main").read("README.md") == "pushed by hand\n"


async def test_a_burst_of_pushes_coalesces_into_one_more_fetch(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    hooks, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    gate = threading.Event()
    fetches: list[str] = []

    def slow_refresh() -> None:
        gate.wait(60)
        bot.forge.refresh()
        fetches.append(bot.repo.resolve("main"))

    hooks.refresher = Coalescer(slow_refresh, "test refresh")
    before = fleet_double.branch_sha("main")
    assert before
    last = before
    for i in range(5):
        last = fleet_double.commit_files("main", {"README.md": f"push {i}\n"}, author="dave")
        assert (await hook.send("push", hook.push(before, last)))[0] == 200
    gate.set()
    await hooks.refresher.idle()
    assert len(fetches) == 2 and fetches[-1] == last


# ------------------------------------------------------------------------------------------- elsewhere


async def test_a_merge_opsbot_did_not_open_is_announced_once(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    _, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    fleet_double.commit_files("docs", {"README.md": "better docs\n"}, author="dave")
    number = fleet_double.open_by_hand("docs", "Docs & <https://evil.example|click>", user="dave")
    sha = fleet_double.merge_by_hand(number, user="erin")
    for _ in range(2):  # two deliveries (e.g. two hooks): one announcement
        status, answer = await hook.send("pull_request", hook.pr(number))
        assert (status, answer["result"]) == (200, "merged-elsewhere")
    (post,) = bot.store.outbox_due(utcnow())
    assert post.kind == "channel_post" and post.payload["channel"] == "CDEPLOY"
    assert post.payload["blocks"] is None
    text = post.payload["text"]
    assert f"PR #{number}" in text and "@dave" in text and "@erin" in text and sha[:7] in text
    assert "Docs &amp; &lt;https://evil.example|click&gt;" in text

    # without a deploy channel there is nobody to tell: nothing is queued
    _, quiet = await make_hook(
        bot, dataclasses.replace(settings, deploy_channel=""), aiohttp_client, fleet_double
    )
    fleet_double.commit_files("docs2", {"README.md": "more docs\n"}, author="dave")
    other = fleet_double.open_by_hand("docs2", "More docs", user="dave")
    fleet_double.merge_by_hand(other)
    status, answer = await quiet.send("pull_request", quiet.pr(other))
    assert (status, answer) == (200, {"ok": True, "result": "merged-elsewhere", "announced": False})
    assert len(bot.store.outbox_due(utcnow())) == 1


# ------------------------------------------------------------------------------------------- recovery


async def test_an_event_stored_before_a_crash_is_applied_on_replay(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble, monkeypatch: Any
) -> None:
    rid, number = await asyncio.to_thread(propose, bot)
    hooks, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    sha = fleet_double.merge_by_hand(number)

    def crash(event: Any) -> Any:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(hooks, "_apply", crash)
    delivery = str(uuid.uuid4())
    status, _ = await hook.send("pull_request", hook.pr(number), delivery=delivery)
    assert status == 500
    req = bot.store.get_request(rid)
    assert req and req.state == RequestState.PROPOSED
    assert [(i.source, i.key) for i in bot.store.inbox_pending()] == [("github", delivery)]

    restarted = GitHubWebhooks(bot, settings)
    # the periodic replay leaves fresh items to the handler that may still be on them
    assert await asyncio.to_thread(restarted.replay, 60.0) == 0
    assert await asyncio.to_thread(restarted.replay) == 1
    req = bot.store.get_request(rid)
    assert req and (req.state, req.merge_sha) == (RequestState.MERGED, sha)
    assert bot.store.inbox_pending() == []
    assert await asyncio.to_thread(restarted.replay) == 0


async def test_the_next_process_replays_before_its_first_genuine_delivery(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble, monkeypatch: Any
) -> None:
    from opsbot.intake.github_routes import github_webhook_routes

    rid, number = await asyncio.to_thread(propose, bot)
    crashing, hook = await make_hook(bot, settings, aiohttp_client, fleet_double)
    sha = fleet_double.merge_by_hand(number)
    monkeypatch.setattr(crashing, "_apply", lambda event: (_ for _ in ()).throw(RuntimeError("died")))
    assert (await hook.send("pull_request", hook.pr(number)))[0] == 500

    # the next process mounts only the routes (as opsbot.server does); a forged delivery replays nothing
    app = web.Application()
    app.add_routes(github_webhook_routes(bot, settings))
    nxt = Hook(bot, settings, await aiohttp_client(app), fleet_double)
    assert (await nxt.send("ping", {}, secret="forged"))[0] == 401
    req = bot.store.get_request(rid)
    assert req and req.state == RequestState.PROPOSED
    assert (await nxt.send("ping", {"zen": "hi"}))[0] == 200
    req = bot.store.get_request(rid)
    assert req and (req.state, req.merge_sha) == (RequestState.MERGED, sha)
    assert bot.store.inbox_pending() == []


# ------------------------------------------------------------------------------------------- fuzz

EVENTS = st.sampled_from(["pull_request", "pull_request_review", "push", "ping", "issues", "", "x" * 300])
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, random JSON, and GitHub-shaped payloads with random holes and values."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return json.dumps(draw(JSONISH)).encode()
    pr = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "number": st.integers(-3, 5) | st.text(max_size=3),
                "merged": st.booleans() | st.none(),
                "merge_commit_sha": st.text(max_size=40) | st.none(),
                "head": st.fixed_dictionaries({}, optional={"ref": st.text(max_size=10) | st.integers()}),
                "merged_by": st.fixed_dictionaries({}, optional={"login": st.text(max_size=10) | st.none()}),
            },
        )
    )
    body = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "action": st.sampled_from(["closed", "submitted", "opened", "edited"]) | st.text(max_size=8),
                "number": st.integers(-3, 5),
                "pull_request": st.just(pr) | JSONISH,
                "review": st.fixed_dictionaries(
                    {}, optional={"state": st.sampled_from(["approved", "APPROVED", 3]), "user": JSONISH}
                ),
                "repository": st.sampled_from(
                    [{"full_name": "acme/fleet"}, {"full_name": "acme/other"}, [], None]
                ),
                "ref": st.text(max_size=12),
                "after": st.text(max_size=40),
                "before": st.text(max_size=40),
            },
        )
    )
    return json.dumps(body).encode()


@pytest.fixture
def served_hook(bot: Opsbot, settings: Settings) -> Iterator[tuple[Opsbot, ServedApp, GitHubWebhooks]]:
    hooks = GitHubWebhooks(bot, settings)
    app = web.Application()
    app.add_routes(hooks.routes())
    with serve_app_in_thread(app) as served:
        yield bot, served, hooks


def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", PATH, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=payloads(),
    event=EVENTS,
    delivery=HEADER_TEXT,
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
    signature=st.sampled_from(["valid", "none", "random", "wrong-secret"]),
    junk=HEADER_TEXT,
)
def test_fuzzed_deliveries_never_get_a_5xx_and_unsigned_ones_change_nothing(
    served_hook: tuple[Opsbot, ServedApp, GitHubWebhooks],
    body: bytes,
    event: str,
    delivery: str,
    content_type: str,
    signature: str,
    junk: str,
) -> None:
    bot, served, hooks = served_hook
    port = urllib.parse.urlsplit(served.url).port
    assert port
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": content_type}
    if signature == "valid":
        headers["X-Hub-Signature-256"] = GitHubDouble.sign(WEBHOOK_SECRET, body)
    elif signature == "random":
        headers["X-Hub-Signature-256"] = junk
    elif signature == "wrong-secret":
        headers["X-Hub-Signature-256"] = GitHubDouble.sign(WEBHOOK_SECRET + "x", body)
    served.run(hooks.refresher.idle())  # a fetch an earlier signed push asked for is not a change
    before = state(bot)
    runs = hooks.refresher.runs
    status = _post(port, body, headers)
    event_label(f"{signature}: {status}")
    assert status < 500
    if signature != "valid":
        assert status == 401
        assert state(bot) == before and hooks.refresher.runs == runs


async def test_mounted_in_the_bot_server_app_it_works_the_same(
    bot: Opsbot, settings: Settings, aiohttp_client: Any, fleet_double: GitHubDouble
) -> None:
    from opsbot.intake.github_routes import github_webhook_routes
    from opsbot.server import make_app

    rid, number = await asyncio.to_thread(propose, bot)
    app = make_app(bot, settings, extra_routes=github_webhook_routes(bot, settings))
    hook = Hook(bot, settings, await aiohttp_client(app), fleet_double)
    sha = fleet_double.merge_by_hand(number)
    assert (await hook.send("pull_request", hook.pr(number), secret="forged"))[0] == 401
    status, answer = await hook.send("pull_request", hook.pr(number))
    assert (status, answer) == (200, {"ok": True, "result": "merged", "request": rid})
    req = bot.store.get_request(rid)
    assert req and req.merge_sha == sha


async def test_the_server_replays_failed_deliveries_periodically(monkeypatch: Any) -> None:
    """`opsbot serve` applies pending deliveries at start and again every GITHUB_REPLAY_SECONDS, and
    each time checks whether open PRs must follow a base that moved (the periodic check)."""
    from opsbot import server as srv

    calls: list[float] = []
    kicks: list[int] = []

    class Refresher:
        def kick(self) -> None:
            kicks.append(len(calls))

    class Hooks:
        refresher = Refresher()

        def replay(self, older_than: float = 0.0) -> int:
            calls.append(older_than)
            return 0

    monkeypatch.setattr(srv, "GITHUB_REPLAY_SECONDS", 0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(srv._replay_github(Hooks(), stop))
    for _ in range(500):  # bounded: at most ~5 s
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert calls[0] == 0.0 and all(c == 0.01 for c in calls[1:])
    assert kicks and kicks[0] == 2  # after each periodic replay, not before the first
