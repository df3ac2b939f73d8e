"""Fixtures that start the Slack double on 127.0.0.1 (`pytest_plugins` or `-p tests.plugins.slack`).

Each test gets its own double on a free port, so tests never share a conversation and may run in parallel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.doubles.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackApiDouble,
    ThreadedSlackDouble,
)


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
