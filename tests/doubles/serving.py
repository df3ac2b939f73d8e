"""Serve an aiohttp app on 127.0.0.1 in its own thread and event loop.

Why a thread: PyGithub, `git` and the kubernetes client are blocking; a server on another loop lets
a plain synchronous test (or a subprocess) call them directly. Every double uses this one helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


@dataclass
class ServedApp:
    """An aiohttp app on 127.0.0.1 in its own thread and loop."""

    url: str
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run a coroutine on the app's loop (e.g. wait for its background work) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def serve_app_in_thread(
    app: web.Application,
    *,
    name: str = "served-app",
    shutdown_timeout: float = 60.0,
    before_cleanup: Callable[[], None] | None = None,
) -> Iterator[ServedApp]:
    """Start `app` on a free port; stop it (and its loop and thread) when the block ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"] = loop.run_until_complete(start())
        except BaseException as exc:  # surface start errors to the caller
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        if before_cleanup is not None:
            before_cleanup()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    started.wait(30)
    if "error" in box:
        raise box["error"]
    try:
        yield ServedApp(f"http://127.0.0.1:{box['port']}", loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
