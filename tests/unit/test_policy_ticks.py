"""The server re-checks policy statuses on its own (windows open and close with nobody typing),
and stops doing so when asked; a failing check is logged, not fatal."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from opsbot.server import _policy_ticks


async def test_the_tick_loop_runs_until_stopped_and_survives_a_failure() -> None:
    ticked = threading.Event()
    calls: list[int] = []

    def tick() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database blipped")
        ticked.set()
        return 0

    stop = asyncio.Event()
    task = asyncio.create_task(_policy_ticks(SimpleNamespace(policies=SimpleNamespace(tick=tick)), stop, 0.01))
    assert await asyncio.to_thread(ticked.wait, 20)  # a hang guard: the second tick ran after the failure
    stop.set()
    await asyncio.wait_for(task, 20)
    assert len(calls) >= 2


async def test_without_policies_the_loop_ends_at_once() -> None:
    await asyncio.wait_for(_policy_ticks(SimpleNamespace(), asyncio.Event(), 0.01), 20)
