"""Hostile input at the server's edge (issue 9 items 8 and the server part of the hostile suite).

One real `opsbot serve` process body (Server: aiohttp, Bolt, the GitHub/Flux/Argo CD intakes,
/metrics, SQLite, the local forge on a fleet repo) runs on 127.0.0.1 in its own thread; the Slack
Web API is the double. Requests are written as raw bytes on a socket, because a hostile client is
not limited to what an HTTP library lets one send (non-ASCII and non-UTF-8 header bytes, 5,000-digit
timestamps, bodies that lie about their length).

What every case asserts: never a 500, never a traceback in the log; bad or missing authentication
is 401; an oversize body is 413; and nothing was processed (requests, inbox, outbox, PRs and the
repo's branches are exactly as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from opsbot.core.model import utcnow
from opsbot.server import Server
from opsbot.settings import load_settings
from tests.doubles.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackApiDouble,
    ThreadedSlackDouble,
    slash_command_body,
)
from tests.plugins.slack import fleet_with_config

MAX_BODY = 64 * 1024
GITHUB_SECRET = "gh-hostile-secret"
FLUX_SECRET = "flux-hostile-secret"
ARGO_TOKEN = "argo-hostile-token"
METRICS_TOKEN = "metrics-hostile-token"

POSTS = ("/slack/events", "/webhooks/github", "/webhooks/flux", "/webhooks/argocd")
GETS = ("/metrics", "/healthz")


# --------------------------------------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    status: int
    body: bytes


def raw_request(port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                *, content_length: int | None = None) -> Answer:
    """Send exactly these bytes; read the answer until the server closes (Connection: close)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
            b"Content-Length: " + str(len(body) if content_length is None else content_length).encode()]
    head += [name + b": " + value for name, value in headers]
    data = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        # the server may answer (413) before reading everything: then read that answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        raw = b""
        while not _complete(raw):  # not "until closed": after a 413 aiohttp lingers for the lied-about body
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    status_line = raw.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), f"no HTTP answer: {raw[:200]!r}"
    head_end = raw.find(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), raw[head_end + 4:] if head_end >= 0 else b"")


def _complete(raw: bytes) -> bool:
    """A whole answer: headers, and as many body bytes as its Content-Length says."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False  # no length: read until the server closes


def slack_signature(body: bytes, ts: bytes, secret: str = SIGNING_SECRET) -> bytes:
    return b"v0=" + hmac.new(secret.encode(), b"v0:" + ts + b":" + body, hashlib.sha256).hexdigest().encode()


def slack_headers(body: bytes, *, ts: bytes | None = None, signature: bytes | None = None) -> list[tuple[bytes, bytes]]:
    stamp = str(int(time.time())).encode() if ts is None else ts
    return [(b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"X-Slack-Request-Timestamp", stamp),
            (b"X-Slack-Signature", slack_signature(body, stamp) if signature is None else signature)]


def github_signature(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


def flux_signature(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(FLUX_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


def good_auth(path: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """Valid authentication for `path` over `body` (to tell "refused for auth" from "refused later")."""
    if path == "/slack/events":
        return slack_headers(body)
    if path == "/webhooks/github":
        return [(b"X-Hub-Signature-256", github_signature(body)), (b"X-GitHub-Event", b"ping"),
                (b"X-GitHub-Delivery", b"d-1"), (b"Content-Type", b"application/json")]
    if path == "/webhooks/flux":
        return [(b"X-Signature", flux_signature(body)), (b"Content-Type", b"application/json")]
    if path in ("/webhooks/argocd", "/metrics"):
        token = ARGO_TOKEN if path == "/webhooks/argocd" else METRICS_TOKEN
        return [(b"Authorization", b"Bearer " + token.encode()), (b"Content-Type", b"application/json")]
    return []


# --------------------------------------------------------------------------------------------- the server


class RunningServer:
    """`opsbot.server.Server` on its own loop in a thread, so plain (and hypothesis) tests can drive it."""

    def __init__(self, settings: Any) -> None:
        self.server = Server(settings, host="127.0.0.1", port=0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile-server", daemon=True)

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop())
            self.run(_cancel_the_rest())  # connections a hostile client left half-sent
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def store(self) -> Any:
        return self.server.bot.store

    def idle(self) -> None:
        """Wait until commands acknowledged so far (and what they queued for Slack) are done."""

        async def settle() -> None:
            slack = self.server.slack
            for _ in range(100):
                await slack.idle()
                if await slack.worker.drain_until_idle() == 0 and slack.in_flight == 0:
                    return
            raise AssertionError("opsbot did not settle")

        self.run(settle())


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Rig:
    server: RunningServer
    slack: SlackApiDouble
    slack_thread: ThreadedSlackDouble
    repo: Path

    def state(self) -> tuple[Any, ...]:
        """Everything a processed request would change."""
        store = self.server.store
        requests = [(r.id, str(r.state), r.pr_number) for r in store.list_requests()]
        inbox = [(i.source, i.key) for i in store.inbox_pending(1000)]
        outbox = [o.key for o in store.outbox_due(utcnow() + timedelta(days=3650), 1000)]
        prs = [(p.number, p.state) for p in self.server.server.bot.forge.list_prs("all")]
        refs = subprocess.run(["git", "-C", str(self.repo), "for-each-ref", "--format=%(refname) %(objectname)"],
                              check=True, capture_output=True, text=True).stdout
        return requests, inbox, outbox, prs, refs

    def send(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
             **kw: Any) -> Answer:
        return raw_request(self.server.port, method, path, headers, body, **kw)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("hostile")
    repo = fleet_with_config(base / "fleet")
    runner = ThreadedSlackDouble()
    double = runner.__enter__()
    try:
        settings = load_settings(
            environ={}, repo=str(repo), state_dir=str(base / "state"),
            slack_bot_token=BOT_TOKEN, slack_api_url=double.api_url, slack_signing_secret=SIGNING_SECRET,
            github_webhook_secret=GITHUB_SECRET, flux_webhook_secret=FLUX_SECRET,
            argocd_webhook_token=ARGO_TOKEN, metrics_token=METRICS_TOKEN, max_body_bytes=MAX_BODY,
        )
        with RunningServer(settings) as server:
            yield Rig(server, double, runner, repo)
    finally:
        runner.__exit__(None, None, None)


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fail the test if anything logged an error or a traceback (aiohttp logs every 500 that way)."""
    with caplog.at_level(logging.INFO):
        yield caplog
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


# --------------------------------------------------------------------------------------------- issue 9 item 8

HOSTILE_TIMESTAMPS = [b"abc", b"1.7e9", b"", b"9" * 5000, b"17\xff0000000", "١٧٠٠٠٠٠٠٠٠".encode(),
                      b"-1", b"+1700000000", b"1_700_000_000", b" 1700000000x", "1७00000000".encode()]


@pytest.mark.parametrize("ts", HOSTILE_TIMESTAMPS, ids=lambda t: repr(t[:12]))
def test_signed_slack_request_with_a_non_numeric_timestamp_is_401(rig: Rig, no_tracebacks: Any,
                                                                   ts: bytes) -> None:
    body = slash_command_body(text="scale frontend 5 in production", response_url="http://127.0.0.1:9/x").encode()
    before = rig.state()
    answer = rig.send("POST", "/slack/events", slack_headers(body, ts=ts), body)
    assert answer.status == 401, answer
    assert rig.state() == before


@pytest.mark.parametrize("signature", [b"v0=\xff\xfe" + b"0" * 62, "v0=é".encode(), b"\x80", b"v0=" + b"a" * 5000])
def test_slack_request_with_a_non_ascii_signature_is_401(rig: Rig, no_tracebacks: Any, signature: bytes) -> None:
    body = slash_command_body(text="status", response_url="http://127.0.0.1:9/x").encode()
    before = rig.state()
    answer = rig.send("POST", "/slack/events", slack_headers(body, signature=signature), body)
    assert answer.status == 401, answer
    assert rig.state() == before


def test_stale_or_future_slack_timestamps_are_401(rig: Rig, no_tracebacks: Any) -> None:
    body = slash_command_body(text="status", response_url="http://127.0.0.1:9/x").encode()
    # an hour off either way: far outside the 5-minute window however slow this machine is
    for ts in (int(time.time()) - 3600, int(time.time()) + 3600, 0):
        answer = rig.send("POST", "/slack/events", slack_headers(body, ts=str(ts).encode()), body)
        assert answer.status == 401, (ts, answer)


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", "Bearer é".encode(), b"\xc3", b"Bearer " + "ü".encode() * 40])
def test_metrics_with_a_non_ascii_authorization_is_401(rig: Rig, no_tracebacks: Any, value: bytes) -> None:
    assert rig.send("GET", "/metrics", [(b"Authorization", value)]).status == 401


def test_metrics_answers_the_right_token_only(rig: Rig, no_tracebacks: Any) -> None:
    assert rig.send("GET", "/metrics", []).status == 401
    assert rig.send("GET", "/metrics", [(b"Authorization", b"Bearer wrong")]).status == 401
    ok = rig.send("GET", "/metrics", [(b"Authorization", f"Bearer {METRICS_TOKEN}".encode())])
    assert ok.status == 200 and b"opsbot_" in ok.body


HOSTILE_VALUES = [b"\xff\xfe", "é".encode(), b"sha256=\xff" + b"0" * 63, b"sha256=" + "é".encode() * 32,
                  b"Bearer \xff", b"x" * 4000, b"", b"sha256=", b"=", b"Bearer"]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: repr(v[:10]))
@pytest.mark.parametrize(("path", "header"), [("/webhooks/github", b"X-Hub-Signature-256"),
                                              ("/webhooks/flux", b"X-Signature"),
                                              ("/webhooks/argocd", b"Authorization")])
def test_webhooks_with_hostile_auth_headers_are_401(rig: Rig, no_tracebacks: Any, path: str, header: bytes,
                                                    value: bytes) -> None:
    body = b'{"hello": "world"}'
    before = rig.state()
    answer = rig.send("POST", path, [(header, value), (b"Content-Type", b"application/json")], body)
    assert answer.status == 401, answer
    assert rig.state() == before


def test_signed_github_delivery_with_hostile_delivery_and_event_headers_is_never_500(rig: Rig,
                                                                                   no_tracebacks: Any) -> None:
    body = json.dumps({"zen": "x", "hook_id": 1}).encode()
    for delivery in (b"\xff\xfe", "é".encode(), b"x" * 4000, b""):
        for event in (b"ping", b"pull_request", b"\xff", "é".encode()):
            headers = [(b"X-Hub-Signature-256", github_signature(body)), (b"X-GitHub-Event", event),
                       (b"X-GitHub-Delivery", delivery), (b"Content-Type", b"application/json")]
            answer = rig.send("POST", "/webhooks/github", headers, body)
            assert answer.status < 500, (delivery, event, answer)


# --------------------------------------------------------------------------------------------- huge bodies


@pytest.mark.parametrize("path", POSTS)
def test_huge_bodies_are_413(rig: Rig, no_tracebacks: Any, path: str) -> None:
    body = b"a" * (MAX_BODY + 1)
    before = rig.state()
    assert rig.send("POST", path, good_auth(path, body), body).status == 413
    # a sender that announces a huge body and never sends it gets its answer without being waited for
    assert rig.send("POST", path, good_auth(path, b""), b"", content_length=50 * MAX_BODY).status == 413
    assert rig.state() == before


# --------------------------------------------------------------------------------------------- fuzz

HEADER_NAMES = [b"Authorization", b"X-Slack-Request-Timestamp", b"X-Slack-Signature", b"X-Hub-Signature-256",
                b"X-GitHub-Event", b"X-GitHub-Delivery", b"X-Signature", b"Content-Type", b"X-Slack-Retry-Num",
                b"Content-Encoding", b"Transfer-Encoding", b"Accept", b"Gotk-Component", b"X-Other"]
#: Header values: any byte but CR/LF (those would start a new header, which is a different test).
header_value = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
hostile_bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["payload", "text", "command", "user_id", "channel_id", "type"]),
                    st.text(max_size=80), max_size=5).map(lambda d: urlencode(d).encode()),
)
FUZZ = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@FUZZ
@given(path=st.sampled_from(POSTS + GETS), headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value),
                                                             max_size=6), body=hostile_bodies)
def test_fuzzed_unauthenticated_requests_are_refused_and_change_nothing(
    rig: Rig, no_tracebacks: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    before = rig.state()
    method = "GET" if path in GETS else "POST"
    answer = rig.send(method, path, headers, body if method == "POST" else b"")
    if path == "/healthz":
        assert answer.status in (200, 400)
    else:
        # 400: aiohttp's own parser refused the request bytes (a bad Transfer-Encoding, say)
        assert answer.status in (400, 401, 413), answer
    assert rig.state() == before


@FUZZ
@given(path=st.sampled_from(POSTS), body=hostile_bodies,
       extra=st.lists(st.tuples(st.sampled_from([b"X-GitHub-Event", b"X-GitHub-Delivery", b"Content-Type",
                                                 b"Gotk-Component", b"X-Slack-Retry-Num"]), header_value),
                      max_size=3))
def test_fuzzed_authenticated_bodies_never_crash(rig: Rig, no_tracebacks: Any, path: str, body: bytes,
                                                 extra: list[tuple[bytes, bytes]]) -> None:
    """A sender holding the secret still cannot make a 500 (these bodies are never valid events)."""
    names = {n.lower() for n, _ in extra}
    headers = [h for h in good_auth(path, body) if h[0].lower() not in names] + extra
    answer = rig.send("POST", path, headers, body)
    assert answer.status < 500, answer


# --------------------------------------------------------------------------------------------- command text


@pytest.mark.parametrize("text", ["scale frontend\x00 5 in production", "scale frontend 5 in\x1b[2J production",
                                  "scale frontend 5 in production\x7f", "scale frontend\u0085 5 in production",
                                  "scale frontend 5 in \u202eproduction", "scale front\u200bend 5 in production"],
                         ids=["nul", "escape", "del", "c1-nel", "bidi-override", "zero-width-space"])
def test_control_and_invisible_characters_in_a_slash_command_are_refused(rig: Rig, no_tracebacks: Any,
                                                                         text: str) -> None:
    before = rig.state()
    user = "U0HOSTILE"
    response_url = rig.slack_thread.run(_new_response_url(rig.slack, user))
    body = slash_command_body(text=text, response_url=response_url, user_id=user, user_name="hostile").encode()
    answer = rig.send("POST", "/slack/events", slack_headers(body), body)
    assert answer.status == 200, answer
    rig.server.idle()
    said = rig.slack_thread.wait_for(lambda: [e for e in rig.slack.ephemeral if e.user == user],
                                     what="the refusal")
    assert "character" in said[-1].text and "plain text" in said[-1].text, said[-1].text
    rig.slack_thread.run(_forget_ephemerals(rig.slack, user))
    assert rig.state() == before


async def _new_response_url(double: SlackApiDouble, user: str) -> str:
    return double.new_response_url(channel="C0OPS", user=user)


async def _forget_ephemerals(double: SlackApiDouble, user: str) -> None:
    double.ephemeral[:] = [e for e in double.ephemeral if e.user != user]


SIGNED_ODD_SLACK_BODIES = [
    (b"payload=%5B1%5D", "application/x-www-form-urlencoded"),  # payload=[1]
    (b"payload=null", "application/x-www-form-urlencoded"),
    (b"payload=%7B%22type%22%3A%22block_actions%22%7D", "application/x-www-form-urlencoded"),
    (b"payload=%7B%22type%22%3A%22block_actions%22%2C%22actions%22%3A%22x%22%2C%22user%22%3A1%7D",
     "application/x-www-form-urlencoded"),
    (b"command=%2Fops&text=status", "application/x-www-form-urlencoded"),  # no user, channel or trigger
    (b"command=%2Fops&text=status&user_id=%00&channel_id=%FF", "application/x-www-form-urlencoded"),
    (b"[]", "application/json"),
    (b'{"type": "url_verification"}', "application/json"),
    (b'{"type": "event_callback", "event": 5}', "application/json"),
    (b"\xff\xfe\x00", "application/x-www-form-urlencoded"),
    (b"{", "application/json"),
]


@pytest.mark.parametrize(("body", "content_type"), SIGNED_ODD_SLACK_BODIES, ids=lambda v: repr(v)[:40])
def test_signed_but_odd_slack_bodies_never_crash(rig: Rig, no_tracebacks: Any, body: bytes,
                                                 content_type: str) -> None:
    headers = [h for h in slack_headers(body) if h[0] != b"Content-Type"]
    answer = rig.send("POST", "/slack/events", [*headers, (b"Content-Type", content_type.encode())], body)
    assert answer.status < 500, answer
    rig.server.idle()


SLACK_KEYS = ["type", "event", "team", "user", "channel", "container", "actions", "view", "message", "state",
              "trigger_id", "response_url", "command", "text", "api_app_id", "token", "enterprise", "id",
              "authorizations", "is_enterprise_install", "team_id", "user_id", "channel_id", "action_id", "value",
              "ts", "message_ts", "username", "name", "event_id", "challenge"]
SLACK_TYPES = ["block_actions", "event_callback", "url_verification", "app_mention", "message", "view_submission",
               "shortcut", "message_action", "block_suggestion", "interactive_message"]
slack_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([*SLACK_TYPES, "opsbot_approve", "R1", "/ops"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SLACK_KEYS), inner, max_size=5),
    max_leaves=25,
)
slack_objects = st.dictionaries(st.sampled_from(SLACK_KEYS), slack_values, max_size=8)


@hsettings(FUZZ, max_examples=200)
@given(obj=slack_objects, as_form=st.booleans())
def test_fuzzed_signed_slack_shapes_never_crash(rig: Rig, no_tracebacks: Any, obj: dict[str, Any],
                                                as_form: bool) -> None:
    """Slack-looking events and interactions with every field in the wrong type: 200 or 400, no traceback."""
    if as_form:
        body, content_type = urlencode({"payload": json.dumps(obj)}).encode(), b"application/x-www-form-urlencoded"
    else:
        body, content_type = json.dumps(obj).encode(), b"application/json"
    headers = [h for h in slack_headers(body) if h[0] != b"Content-Type"] + [(b"Content-Type", content_type)]
    answer = rig.send("POST", "/slack/events", headers, body)
    assert answer.status < 500, answer
    rig.server.idle()


def test_the_signature_window_is_five_minutes_either_way() -> None:
    """The window itself, with an injected clock (the HTTP tests stay an hour away from its edge)."""
    from opsbot.chat.slack.checks import verify_slack_signature

    body = b"command=%2Fops&text=status"
    now = 1_800_000_000.0

    def ok(ts: str) -> bool:
        return verify_slack_signature(SIGNING_SECRET, body, ts, slack_signature(body, ts.encode()).decode(), now=now)

    assert ok("1800000000") and ok("1799999700") and ok("1800000300")
    assert not ok("1799999699") and not ok("1800000301")
    assert not verify_slack_signature("", body, "1800000000", slack_signature(body, b"1800000000").decode(), now=now)
    assert not verify_slack_signature(SIGNING_SECRET, body + b"x", "1800000000",
                                      slack_signature(body, b"1800000000").decode(), now=now)
