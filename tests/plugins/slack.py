"""Fixtures that start the Slack double on 127.0.0.1 (`pytest_plugins` or `-p tests.plugins.slack`).

Each test gets its own double on a free port, so tests never share a conversation and may run in parallel.
`slack_chat` starts the real opsbot server against it, with transcript helpers (`SlackChat`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.doubles.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    Ephemeral,
    Message,
    SlackApiDouble,
    ThreadedSlackDouble,
    slash_command_body,
)
from tests.repos import make_repo


@pytest_asyncio.fixture
async def slack_double() -> AsyncIterator[SlackApiDouble]:
    """A started double on the test's event loop: Web API at `.api_url`, hooks, Socket Mode."""
    double = SlackApiDouble()
    await double.start()
    try:
        yield double
    finally:
        await double.close()


@pytest.fixture
def slack_double_thread() -> Iterator[ThreadedSlackDouble]:
    """The double on its own loop in a thread, for sync tests (`.double`, `.run(coro)`, `.wait_for`)."""
    runner = ThreadedSlackDouble()
    runner.__enter__()
    try:
        yield runner
    finally:
        runner.__exit__(None, None, None)


@pytest.fixture
def slack_signing_secret() -> str:
    return SIGNING_SECRET


@pytest.fixture
def slack_bot_token() -> str:
    return BOT_TOKEN


@pytest.fixture
def slack_app_token() -> str:
    return APP_TOKEN


@pytest.fixture
def slack_env(slack_double: SlackApiDouble, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bot's Slack settings (DESIGN §4) pointing at the double, set in os.environ for the test."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_double.api_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    return env


# ----------------------------------------------------------------------------------------- opsbot in Slack
#
# Transcript helpers: the real opsbot server (aiohttp + Bolt + outbox worker, local forge, SQLite)
# on 127.0.0.1, driven through the Slack double, so a test reads like a conversation:
#
#     chat = await slack_chat()
#     said = await chat.ops("scale frontend 5 in production", user="U0ALICE")
#     root = chat.only_root()
#     await chat.click(root, "approve", user="U0BOB")
#     assert chat.thread(root) == ["✅ Approved by <@U0BOB>"]


#: Slack user ids used by the transcripts, and the names Slack sends with them.
NAMES = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave"}
CHANNEL = "C0OPS"


def readable(blocks: list[dict[str, Any]], fallback: str) -> str:
    """What a person reads in a message: the text of its blocks (unescaped), or the fallback text."""
    if not blocks:
        return fallback
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                parts.append(node["text"])
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    # Slack shows &lt; &gt; &amp; as the characters they stand for
    return "\n".join(parts).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def fleet_with_config(dest: Path, **envs: Mapping[str, Any]) -> Path:
    """The fleet sample repo with a committed `.opsbot.yaml` (production needs 1 approval).

    `envs` override env settings, e.g. `production={"approvals": 2}`.
    """
    import yaml

    from opsbot.manifests.config import CONFIG_FILE, discover, render_config
    from opsbot.manifests.gitrepo import GitRepo

    repo = make_repo("fleet", dest)
    git_repo = GitRepo(str(repo))
    text = render_config(discover(git_repo.snapshot("main")))
    git_repo.close()
    if envs:
        data = yaml.safe_load(text)
        for name, spec in envs.items():
            data["environments"][name].update(spec)
        text = yaml.safe_dump(data, sort_keys=False)
    (repo / CONFIG_FILE).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_DATE="2024-03-02T09:00:00Z",
               GIT_COMMITTER_DATE="2024-03-02T09:00:00Z")
    for args in (["add", CONFIG_FILE], ["commit", "-q", "-m", "Pin opsbot config"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    return repo


@dataclass
class Said:
    """What happened for one command or click: the HTTP status, the ack body, and the ephemerals."""

    status: int
    ack: str
    ephemerals: list[str] = field(default_factory=list)
    response_url: str = ""

    @property
    def ephemeral(self) -> str:
        """The one ephemeral answer (fails loudly when there was not exactly one)."""
        assert len(self.ephemerals) == 1, f"expected one ephemeral answer, got {self.ephemerals!r}"
        return self.ephemerals[0]


class SlackChat:
    """One workspace talking to one running opsbot."""

    def __init__(self, double: SlackApiDouble, server: Any, channel: str = CHANNEL) -> None:
        self.double = double
        self.server = server
        self.channel = channel

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/slack/events"

    @property
    def transport(self) -> Any:
        return self.server.slack

    @property
    def bot(self) -> Any:
        return self.server.bot

    @property
    def store(self) -> Any:
        return self.server.bot.store

    async def settle(self) -> None:
        """Wait for the work acknowledged so far: commands, clicks, and the outbox posts they queued."""
        for _ in range(100):
            await self.transport.idle()
            posted = await self.transport.worker.drain_until_idle()
            if posted == 0 and self.transport.in_flight == 0:
                return
        raise AssertionError("opsbot did not settle")

    def _said(self, sent: Any, before: int, user: str) -> Said:
        new: list[Ephemeral] = [e for e in self.double.ephemeral[before:] if e.user == user]
        return Said(sent.status, sent.text, [readable(e.blocks, e.text) for e in new], sent.response_url)

    async def ops(
        self,
        text: str,
        *,
        user: str = "U0ALICE",
        channel: str | None = None,
        settle: bool = True,
        headers: Mapping[str, str] | None = None,
        trigger_id: str | None = None,
    ) -> Said:
        """Type `/ops <text>` as `user` in `channel` (signed HTTP), then wait for opsbot's answer."""
        before = len(self.double.ephemeral)
        channel = channel or self.channel
        response_url = self.double.new_response_url(channel=channel, user=user)
        body = slash_command_body(text=text, response_url=response_url, user_id=user,
                                  user_name=NAMES.get(user, user.lower()), channel_id=channel,
                                  trigger_id=trigger_id)
        sent = await self.double.send_signed(self.url, body, headers=headers)
        sent.response_url = response_url
        if settle:
            await self.settle()
        return self._said(sent, before, user)

    async def click(self, message: Message, button: str, *, user: str = "U0BOB", settle: bool = True) -> Said:
        """Click `button` (approve, merge, cancel, review) on `message` as `user`."""
        before = len(self.double.ephemeral)
        sent = await self.double.send_click(self.url, message, f"opsbot_{button}", user_id=user,
                                            user_name=NAMES.get(user, user.lower()))
        if settle:
            await self.settle()
        return self._said(sent, before, user)

    # reading the channel ---------------------------------------------------------------------------
    def roots(self, channel: str | None = None) -> list[Message]:
        return self.double.messages(channel or self.channel)

    def only_root(self, channel: str | None = None) -> Message:
        roots = self.roots(channel)
        assert len(roots) == 1, f"expected one thread root, got {[r.text for r in roots]}"
        return roots[0]

    def thread(self, root: Message) -> list[str]:
        return [m.all_text() for m in self.double.replies(root.channel, root.ts)]

    @staticmethod
    def status(message: Message) -> str:
        """The root's status line (what chat.update changes)."""
        for line in message.all_text().splitlines():
            if line.startswith("*Status:*"):
                return line[len("*Status:*"):].strip()
        raise AssertionError(f"no status line in {message.all_text()!r}")

    def ephemerals(self, user: str) -> list[str]:
        return [readable(e.blocks, e.text) for e in self.double.ephemerals(user=user)]


ChatFactory = Callable[..., Awaitable[SlackChat]]


@pytest_asyncio.fixture
async def slack_chat(slack_double: SlackApiDouble, tmp_path: Path) -> AsyncIterator[ChatFactory]:
    """Start opsbot against the double: `chat = await slack_chat(rbac=..., approvals_mode=..., ...)`.

    Keyword arguments are settings overrides; `repo=` picks another manifest repo (default: the
    fleet sample with production needing 1 approval); `socket=True` runs Socket Mode instead of HTTP.
    """
    from opsbot.server import Server
    from opsbot.settings import load_settings

    servers: list[Any] = []

    async def make(*, repo: Path | None = None, socket: bool = False, **overrides: Any) -> SlackChat:
        repo = repo or fleet_with_config(tmp_path / f"fleet{len(servers)}")
        values: dict[str, Any] = {
            "repo": str(repo),
            "slack_bot_token": BOT_TOKEN,
            "slack_api_url": slack_double.api_url,
        }
        if socket:
            values["slack_app_token"] = APP_TOKEN
        else:
            values["slack_signing_secret"] = SIGNING_SECRET
        values.update(overrides)
        settings = load_settings(environ={}, **values)
        server = Server(settings, host="127.0.0.1", port=0)
        await server.start()
        servers.append(server)
        return SlackChat(slack_double, server)

    try:
        yield make
    finally:
        for server in servers:
            await server.stop()
