"""The Slack double is only worth its keep if real Slack clients get from it what Slack gives them.

Every test here drives the double with the real libraries (slack_sdk's Web API clients, its Socket
Mode client, a slack_bolt AsyncApp behind aiohttp) and checks the documented shapes and refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.doubles.slack import (
    APP_TOKEN,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    TEAM_ID,
    SlackApiDouble,
    ThreadedSlackDouble,
    block_actions_body,
    block_actions_payload,
    sign,
    slash_command_body,
)

CHANNEL = "C0OPS"

BUTTONS: list[dict[str, Any]] = [
    {"type": "section", "block_id": "title", "text": {"type": "mrkdwn", "text": "*Scale cache*"}},
    {
        "type": "actions",
        "block_id": "act-1",
        "elements": [
            {
                "type": "button",
                "action_id": "opsbot_approve",
                "value": "req-1",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
            },
        ],
    },
]


def client(double: SlackApiDouble, token: str = BOT_TOKEN, **kw: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=double.api_url, **kw)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp app (the bolt app under test) on 127.0.0.1 and yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        address: Any = runner.addresses[0]
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------- Web API


async def test_auth_test_shape_async_and_sync(slack_double: SlackApiDouble) -> None:
    resp = await client(slack_double).auth_test()
    assert resp.status_code == 200
    data: Any = resp.data
    assert data["ok"] is True
    assert {"url", "team", "user", "team_id", "user_id", "bot_id"} <= set(data)
    assert (resp["team_id"], resp["user_id"], resp["bot_id"]) == (TEAM_ID, BOT_USER_ID, BOT_ID)

    sync = WebClient(token=BOT_TOKEN, base_url=slack_double.api_url)
    sync_resp = await asyncio.to_thread(sync.auth_test)
    assert sync_resp["user_id"] == BOT_USER_ID
    assert [c.token for c in slack_double.calls_to("auth.test")] == [BOT_TOKEN, BOT_TOKEN]


async def test_post_message_threads_and_unique_ts(slack_double: SlackApiDouble) -> None:
    web_client = client(slack_double)
    root = await web_client.chat_postMessage(channel=CHANNEL, text="root", blocks=BUTTONS)
    assert root["ok"] is True and root["channel"] == CHANNEL
    message = root["message"]
    assert message["ts"] == root["ts"] and message["bot_id"] == BOT_ID and message["user"] == BOT_USER_ID
    assert message["blocks"][1]["elements"][0]["action_id"] == "opsbot_approve"

    r1 = await web_client.chat_postMessage(channel=CHANNEL, text="first reply", thread_ts=root["ts"])
    r2 = await web_client.chat_postMessage(channel=CHANNEL, text="reply to a reply", thread_ts=r1["ts"])
    assert r1["message"]["thread_ts"] == root["ts"]
    assert r2["message"]["thread_ts"] == root["ts"]  # Slack threads under the root, not under the reply
    stamps = [root["ts"], r1["ts"], r2["ts"]]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 3
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)

    assert [m.text for m in slack_double.messages(CHANNEL)] == ["root"]
    assert [m.text for m in slack_double.replies(CHANNEL, root["ts"])] == ["first reply", "reply to a reply"]
    # chat.postMessage goes out as JSON with the blocks inline: the double records them decoded
    call = slack_double.calls_to("chat.postMessage")[0]
    assert call.content_type.startswith("application/json")
    assert call.params["blocks"][0]["block_id"] == "title"


async def test_form_encoded_posts_are_understood(slack_double: SlackApiDouble) -> None:
    sync = WebClient(token=BOT_TOKEN, base_url=slack_double.api_url)
    resp = await asyncio.to_thread(
        sync.api_call,
        "chat.postMessage",
        data={"channel": CHANNEL, "text": "form", "blocks": json.dumps(BUTTONS)},
    )
    assert resp["ok"] is True
    call = slack_double.calls_to("chat.postMessage")[0]
    assert call.content_type.startswith("application/x-www-form-urlencoded")
    assert slack_double.message(CHANNEL, resp["ts"]).blocks[0]["block_id"] == "title"


async def test_update_changes_root_and_keeps_history(slack_double: SlackApiDouble) -> None:
    web_client = client(slack_double)
    root = await web_client.chat_postMessage(channel=CHANNEL, text="v1", blocks=BUTTONS)
    updated = await web_client.chat_update(channel=CHANNEL, ts=root["ts"], text="v2", blocks=[BUTTONS[0]])
    assert updated["ok"] is True and updated["ts"] == root["ts"] and updated["channel"] == CHANNEL
    # leaving blocks out keeps them, as Slack does
    await web_client.chat_update(channel=CHANNEL, ts=root["ts"], text="v3")
    msg = slack_double.message(CHANNEL, root["ts"])
    assert msg.text == "v3" and msg.action_ids() == [] and msg.edits == 2
    assert [v["text"] for v in msg.versions] == ["v1", "v2"]
    assert len(slack_double.messages(CHANNEL)) == 1


async def test_update_refusals(slack_double: SlackApiDouble) -> None:
    web_client = client(slack_double)
    slack_double.add_channel(CHANNEL, "ops")
    root = await web_client.chat_postMessage(channel="#ops", text="by name")
    assert root["channel"] == CHANNEL  # names resolve for postMessage...

    with pytest.raises(SlackApiError) as e:
        await web_client.chat_update(channel="#ops", ts=root["ts"], text="x")  # ...but update needs the ID
    assert e.value.response["error"] == "channel_not_found"

    with pytest.raises(SlackApiError) as e:
        await web_client.chat_update(channel=CHANNEL, ts="1700000000.000001", text="x")
    assert e.value.response["error"] == "message_not_found"

    human = slack_double.post_user_message(CHANNEL, "hello", user="U0ALICE")
    with pytest.raises(SlackApiError) as e:
        await web_client.chat_update(channel=CHANNEL, ts=human.ts, text="edited by a bot")
    assert e.value.response["error"] == "cant_update_message"
    assert slack_double.message(CHANNEL, human.ts).text == "hello"


@pytest.mark.parametrize(
    ("token", "error"),
    [(None, "not_authed"), ("xoxb-wrong", "invalid_auth"), (APP_TOKEN, "not_allowed_token_type")],
)
async def test_auth_refusals(slack_double: SlackApiDouble, token: str | None, error: str) -> None:
    web_client = AsyncWebClient(token=token, base_url=slack_double.api_url)
    with pytest.raises(SlackApiError) as e:
        await web_client.chat_postMessage(channel=CHANNEL, text="x")
    assert e.value.response.status_code == 200  # Slack reports auth errors in the body, not the status
    assert e.value.response["ok"] is False and e.value.response["error"] == error
    assert slack_double.messages(CHANNEL) == []


async def test_revoked_token(slack_double: SlackApiDouble) -> None:
    slack_double.revoke(BOT_TOKEN)
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).auth_test()
    assert e.value.response["error"] == "token_revoked"


async def test_rate_limit_429_with_retry_after(slack_double: SlackApiDouble) -> None:
    slack_double.rate_limit("chat.postMessage", times=2, retry_after=7)
    web_client = client(slack_double)
    for _ in range(2):
        with pytest.raises(SlackApiError) as e:
            await web_client.chat_postMessage(channel=CHANNEL, text="x")
        assert e.value.response.status_code == 429
        assert e.value.response.headers["Retry-After"] == "7"
        assert e.value.response["error"] == "ratelimited"
    ok = await web_client.chat_postMessage(channel=CHANNEL, text="third time")
    assert ok["ok"] is True
    assert [c.status for c in slack_double.calls_to("chat.postMessage")] == [429, 429, 200]
    assert [m.text for m in slack_double.messages(CHANNEL)] == ["third time"]

    # the sync client sees the same thing through urllib
    slack_double.rate_limit("chat.update", times=1, retry_after=3)
    sync = WebClient(token=BOT_TOKEN, base_url=slack_double.api_url)
    with pytest.raises(SlackApiError) as e:
        await asyncio.to_thread(sync.chat_update, channel=CHANNEL, ts=ok["ts"], text="y")
    assert e.value.response.status_code == 429 and e.value.response.headers["Retry-After"] == "3"


async def test_slack_sdk_retry_handler_honours_the_double(slack_double: SlackApiDouble) -> None:
    slack_double.rate_limit("chat.postMessage", times=1, retry_after=0)
    web_client = client(slack_double, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    resp = await web_client.chat_postMessage(channel=CHANNEL, text="after retry")
    assert resp["ok"] is True
    assert [c.status for c in slack_double.calls_to("chat.postMessage")] == [429, 200]


async def test_server_errors(slack_double: SlackApiDouble) -> None:
    slack_double.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).chat_postMessage(channel=CHANNEL, text="x")
    assert e.value.response.status_code == 503
    assert (await client(slack_double).chat_postMessage(channel=CHANNEL, text="x"))["ok"] is True


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found", "is_archived"])
async def test_channel_errors(slack_double: SlackApiDouble, error: str) -> None:
    slack_double.set_channel_error("C0PRIVATE", error)
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).chat_postMessage(channel="C0PRIVATE", text="x")
    assert e.value.response["error"] == error
    assert (await client(slack_double).chat_postMessage(channel=CHANNEL, text="x"))["ok"] is True


async def test_unknown_channel_name_and_missing_text(slack_double: SlackApiDouble) -> None:
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).chat_postMessage(channel="#nowhere", text="x")
    assert e.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as e, pytest.warns(UserWarning, match="text"):
        await client(slack_double).chat_postMessage(channel=CHANNEL)
    assert e.value.response["error"] == "no_text"


async def test_invalid_blocks_are_refused(slack_double: SlackApiDouble) -> None:
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).chat_postMessage(channel=CHANNEL, text="x", blocks=too_long)
    assert e.value.response["error"] == "invalid_blocks"
    assert "json-pointer:/blocks/0/text/text" in e.value.response["errors"][0]
    long_button = [
        {
            "type": "actions",
            "elements": [
                {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b" * 76}}
            ],
        }
    ]
    with pytest.raises(SlackApiError):
        await client(slack_double).chat_postMessage(channel=CHANNEL, text="x", blocks=long_button)
    assert slack_double.messages(CHANNEL) == []


async def test_post_ephemeral(slack_double: SlackApiDouble) -> None:
    web_client = client(slack_double)
    resp = await web_client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="only you")
    assert resp["ok"] is True and "message_ts" in resp.data
    assert [e.text for e in slack_double.ephemerals(user="U0ALICE")] == ["only you"]
    assert slack_double.messages(CHANNEL) == []
    slack_double.set_user_not_in_channel(CHANNEL, "U0OUTSIDER")
    with pytest.raises(SlackApiError) as e:
        await web_client.chat_postEphemeral(channel=CHANNEL, user="U0OUTSIDER", text="x")
    assert e.value.response["error"] == "user_not_in_channel"


async def test_usergroups_and_users(slack_double: SlackApiDouble) -> None:
    slack_double.add_usergroup("S0APPROVERS", ["U0BOB", "U0CAROL"])
    slack_double.add_user("U0BOB", "bob", real_name="Bob B")
    web_client = client(slack_double)
    resp = await web_client.usergroups_users_list(usergroup="S0APPROVERS")
    assert resp.data == {"ok": True, "users": ["U0BOB", "U0CAROL"]}
    assert slack_double.calls_to("usergroups.users.list")[0].http_method == "GET"
    with pytest.raises(SlackApiError) as e:
        await web_client.usergroups_users_list(usergroup="S0NOPE")
    assert e.value.response["error"] == "no_such_subteam"
    user = await web_client.users_info(user="U0BOB")
    assert user["user"]["name"] == "bob" and user["user"]["profile"]["real_name"] == "Bob B"
    with pytest.raises(SlackApiError) as e:
        await web_client.users_info(user="U0NOBODY")
    assert e.value.response["error"] == "user_not_found"


async def test_response_url_sink(slack_double: SlackApiDouble) -> None:
    url = slack_double.new_response_url(channel=CHANNEL, user="U0ALICE")
    hook = AsyncWebhookClient(url)
    resp = await hook.send(text="private answer")
    assert (resp.status_code, resp.body) == (200, "ok")
    resp = await hook.send(text="for everyone", response_type="in_channel")
    assert resp.status_code == 200
    assert [e.text for e in slack_double.ephemerals(user="U0ALICE")] == ["private answer"]
    assert [m.text for m in slack_double.messages(CHANNEL)] == ["for everyone"]
    assert slack_double.hook_bodies(url)[0]["text"] == "private answer"
    for _ in range(3):
        assert (await hook.send(text="again")).status_code == 200
    assert (await hook.send(text="sixth")).status_code == 404  # "up to 5 times"
    unknown = await AsyncWebhookClient(f"{slack_double.base_url}/hooks/nope").send(text="x")
    assert unknown.status_code == 404


async def test_response_url_replaces_the_clicked_message(slack_double: SlackApiDouble) -> None:
    root = await client(slack_double).chat_postMessage(channel=CHANNEL, text="v1", blocks=BUTTONS)
    msg = slack_double.message(CHANNEL, root["ts"])
    payload = slack_double.click(msg, "opsbot_approve")
    await AsyncWebhookClient(payload["response_url"]).send(text="v2", replace_original=True)
    assert msg.text == "v2" and msg.action_ids() == [] and msg.edits == 1


# --------------------------------------------------------------------------------------------- payloads


def test_signing_matches_slack_sdk() -> None:
    body = slash_command_body(text="scale cache 3 in production", response_url="http://127.0.0.1:1/hooks/x")
    headers = sign(body, SIGNING_SECRET)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(body, "other-secret"))
    assert not verifier.is_valid_request(body, sign(body, SIGNING_SECRET, int(time.time()) - 600))
    assert body.startswith("token=") and "command=%2Fops" in body
    assert "text=scale+cache+3+in+production" in body


def test_block_actions_body_like_slack() -> None:
    message = {"ts": "1700000000.000100", "text": "root", "blocks": BUTTONS}
    body = block_actions_body(
        message=message,
        action_id="opsbot_approve",
        channel_id=CHANNEL,
        response_url="http://127.0.0.1:1/hooks/x",
    )
    assert body.startswith("payload=%7B")
    from urllib.parse import parse_qs

    payload = json.loads(parse_qs(body)["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000100",
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    action = payload["actions"][0]
    assert (action["block_id"], action["value"], action["type"]) == ("act-1", "req-1", "button")
    assert {"user", "channel", "message", "trigger_id", "response_url", "team"} <= set(payload)
    with pytest.raises(LookupError):
        block_actions_payload(message=message, action_id="opsbot_merge", response_url="x")


# --------------------------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_hello_envelope_ack_and_reconnect(slack_double: SlackApiDouble) -> None:
    seen: list[dict[str, Any]] = []
    handled: list[SocketModeRequest] = []

    async def on_message(c: Any, message: dict[str, Any], raw: str | None) -> None:
        seen.append(message)

    async def on_request(c: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        handled.append(req)
        await c.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload={"text": "got it"})
        )

    sm = SocketModeClient(app_token=APP_TOKEN, web_client=client(slack_double, token=""))
    sm.message_listeners.append(on_message)
    sm.socket_mode_request_listeners.append(on_request)
    try:
        await sm.connect()
        await slack_double.wait_for(lambda: any(m.get("type") == "hello" for m in seen), what="hello")
        opens = slack_double.calls_to("apps.connections.open")
        assert len(opens) == 1 and opens[0].token == APP_TOKEN

        ack = await slack_double.push_slash_command("scale cache 3 in production")
        assert ack["payload"] == {"text": "got it"}
        assert handled[0].type == "slash_commands"
        assert handled[0].payload["text"] == "scale cache 3 in production"
        assert ack["envelope_id"] == handled[0].envelope_id

        await slack_double.send_disconnect("refresh_requested")
        await slack_double.wait_for(
            lambda: (
                len(slack_double.open_socket_connections) == 1 and len(slack_double.socket_connections) == 2
            ),
            what="reconnect",
        )
        assert len(slack_double.calls_to("apps.connections.open")) == 2
        assert slack_double.socket_connections[0].closed
        assert slack_double.socket_connections[1].sent[0]["type"] == "hello"

        event = {"type": "event_callback", "event": {"type": "app_mention"}}
        ack = await slack_double.push("events_api", event)
        assert ack["envelope_id"] == handled[1].envelope_id and handled[1].type == "events_api"
        assert handled[1].accepts_response_payload is False and handled[1].retry_attempt == 0
    finally:
        await sm.close()


async def test_socket_tickets_are_single_use(slack_double: SlackApiDouble) -> None:
    resp = await client(slack_double, token=APP_TOKEN).apps_connections_open(app_token=APP_TOKEN)
    url = resp["url"]
    assert url.startswith(f"ws://127.0.0.1:{slack_double.port}/socket")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            assert hello["connection_info"]["app_id"]
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)
    with pytest.raises(SlackApiError) as e:
        await client(slack_double).apps_connections_open(app_token=BOT_TOKEN)
    assert e.value.response["error"] == "not_allowed_token_type"


async def test_push_without_ack_times_out(slack_double: SlackApiDouble) -> None:
    resp = await client(slack_double, token=APP_TOKEN).apps_connections_open(app_token=APP_TOKEN)
    async with aiohttp.ClientSession() as session, session.ws_connect(resp["url"]) as ws:
        await ws.receive_json(timeout=5)
        with pytest.raises(TimeoutError):
            await slack_double.push("interactive", {"type": "block_actions"}, timeout=0.2)


# --------------------------------------------------------------------------------------------- slack_bolt


def bolt_app(double: SlackApiDouble) -> AsyncApp:
    app = AsyncApp(signing_secret=SIGNING_SECRET, client=client(double), process_before_response=True)

    @app.command("/ops")
    async def ops(ack: Any, say: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack("working on it")
        await say(f"asked: {command['text']}")
        await respond({"text": "done"})

    @app.action("opsbot_approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.chat_update(
            channel=body["channel"]["id"],
            ts=body["message"]["ts"],
            text=f"approved {body['actions'][0]['value']}",
            blocks=[],
        )

    return app


def http_app(bolt: AsyncApp) -> web.Application:
    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    return app


async def test_bolt_signed_slash_command_says_and_responds(slack_double: SlackApiDouble) -> None:
    async with serve(http_app(bolt_app(slack_double))) as base:
        sent = await slack_double.send_slash_command(f"{base}/slack/events", "deploy web 1.2.3")
    assert (sent.status, sent.text) == (200, "working on it")
    assert [m.text for m in slack_double.messages(CHANNEL)] == ["asked: deploy web 1.2.3"]
    assert [e.text for e in slack_double.ephemerals(channel=CHANNEL, user="U0ALICE")] == ["done"]
    assert slack_double.hook_bodies(sent.response_url) == [{"text": "done"}]
    assert [c.method for c in slack_double.calls] == ["auth.test", "chat.postMessage"]


async def test_bolt_click_updates_the_root(slack_double: SlackApiDouble) -> None:
    root = await client(slack_double).chat_postMessage(channel=CHANNEL, text="root", blocks=BUTTONS)
    msg = slack_double.message(CHANNEL, root["ts"])
    async with serve(http_app(bolt_app(slack_double))) as base:
        sent = await slack_double.send_click(f"{base}/slack/events", msg, "opsbot_approve")
    assert sent.status == 200
    assert msg.text == "approved req-1" and msg.blocks == []


@pytest.mark.parametrize("case", ["wrong secret", "no signature", "stale timestamp"])
async def test_bolt_refuses_bad_signatures(slack_double: SlackApiDouble, case: str) -> None:
    response_url = slack_double.new_response_url(channel=CHANNEL, user="U0ALICE")
    body = slash_command_body(text="scale cache 3 in production", response_url=response_url)
    headers = {
        "wrong secret": sign(body, "not-the-secret"),
        "no signature": {"Content-Type": "application/x-www-form-urlencoded"},
        "stale timestamp": sign(body, SIGNING_SECRET, int(time.time()) - 10 * 60),
    }[case]
    async with (
        serve(http_app(bolt_app(slack_double))) as base,
        aiohttp.ClientSession() as session,
        session.post(f"{base}/slack/events", data=body.encode(), headers=headers) as resp,
    ):
        assert resp.status == 401
        assert await resp.json() == {"error": "invalid request"}
    assert slack_double.calls == [] and slack_double.hook_posts == []


async def test_bolt_over_socket_mode(slack_double: SlackApiDouble) -> None:
    app = bolt_app(slack_double)
    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    try:
        await handler.connect_async()
        await slack_double.wait_for(lambda: slack_double.open_socket_connections, what="connection")
        ack = await slack_double.push_slash_command("deploy web 1.2.3")
        assert ack["payload"] == {"text": "working on it"}
        await slack_double.wait_for(lambda: slack_double.messages(CHANNEL), what="say()")
        assert slack_double.messages(CHANNEL)[0].text == "asked: deploy web 1.2.3"
        await slack_double.wait_for(lambda: slack_double.ephemerals(user="U0ALICE"), what="respond()")
    finally:
        await handler.close_async()


# --------------------------------------------------------------------------------------------- threaded


def test_threaded_double_for_sync_code(slack_double_thread: ThreadedSlackDouble) -> None:
    double = slack_double_thread.double
    sync = WebClient(token=BOT_TOKEN, base_url=double.api_url)
    root = sync.chat_postMessage(channel=CHANNEL, text="from sync code")
    sync.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=root["ts"])
    replies = slack_double_thread.wait_for(lambda: double.replies(CHANNEL, root["ts"]))
    assert [m.text for m in replies] == ["reply"]


# --------------------------------------------------------------------------------------------- with blocks.py


async def test_rendered_root_is_accepted_and_clickable(slack_double: SlackApiDouble) -> None:
    """opsbot's own root message passes the double's Block Kit checks and round-trips a click."""
    from opsbot.chat import blocks
    from opsbot.core.model import Request, RequestState

    req = Request(
        id="R7",
        intent_key="k",
        command="scale cache 3 in production",
        verb="scale",
        app="cache",
        env="production",
        requester="U0ALICE",
        state=RequestState.PROPOSED,
        pr_number=7,
        pr_url="https://github.com/acme/fleet/pull/7",
        title="Scale cache to 3 replicas in production",
        approvals_needed=1,
        fields=[{"app": "cache", "env": "production", "field": "replicas", "old": "1", "new": "3"}],
    )
    diff = "--- a/k.yaml\n+++ b/k.yaml\n@@ -1 +1,3 @@\n" + "".join(f"+line {i}\n" for i in range(400))
    web_client = client(slack_double)
    root = await web_client.chat_postMessage(channel=CHANNEL, **blocks.request_root(req, None, diff))
    clicks: list[dict[str, Any]] = []

    app = AsyncApp(signing_secret=SIGNING_SECRET, client=client(slack_double), process_before_response=True)

    @app.action("opsbot_approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        clicks.append(body)
        req.state = RequestState.APPROVED
        await client.chat_update(
            channel=body["channel"]["id"],
            ts=body["message"]["ts"],
            **blocks.root_update(body["message"]["blocks"], req),
        )
        await client.chat_postMessage(
            channel=body["channel"]["id"],
            thread_ts=body["message"]["ts"],
            **blocks.thread_reply("approved", by=body["user"]["id"]),
        )

    msg = slack_double.message(CHANNEL, root["ts"])
    async with serve(http_app(app)) as base:
        sent = await slack_double.send_click(f"{base}/slack/events", msg, "opsbot_approve", user_id="U0BOB")
    assert sent.status == 200
    assert clicks[0]["actions"][0]["value"] == "R7"
    assert msg.edits == 1 and "approved, ready to merge" in msg.all_text()
    assert msg.blocks[1]["text"] == msg.versions[0]["blocks"][1]["text"]  # the diff survived the update
    assert msg.blocks[1]["block_id"] != msg.versions[0]["blocks"][1]["block_id"]  # under a new block_id
    assert [r.text for r in slack_double.replies(CHANNEL, root["ts"])] == ["✅ Approved by <@U0BOB>"]
