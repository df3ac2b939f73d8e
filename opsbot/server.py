"""`opsbot serve`: one aiohttp application for Slack, the webhooks, and the health probes.

Why one application on one port (OPSBOT_PORT): a Kubernetes Service, an Ingress and the probes all
point at the same place, and every inbound route shares the same body limit (`max_body_bytes`,
enforced by aiohttp's `client_max_size` → 413 before any handler reads the body).

The seam for other parts is `make_app(..., extra_routes=[web.post("/webhooks/github", h), ...])`:
routes are plain aiohttp RouteDefs, so the GitHub, Flux and Argo CD intakes and /metrics plug in
without this module knowing them (`Server(settings, extra_routes=...)` for the full process).

Shutdown (SIGTERM from Kubernetes, or SIGINT): /readyz turns 503 so no new traffic is routed here;
Slack commands and clicks are answered "restarting" instead of run; Socket Mode disconnects (Slack
sends the next envelopes to another replica or retries them); commands already acknowledged finish;
the outbox gets a short flush; then the listener closes. Anything still queued in the outbox is
posted by the next process, since it lives in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from opsbot.settings import Settings

log = logging.getLogger(__name__)

DRAINING = web.AppKey("opsbot_draining", dict)
BOT = web.AppKey("opsbot_bot", object)
SLACK_AUTH = web.AppKey("opsbot_slack_auth", dict)

#: How long shutdown waits for acknowledged commands, and for the outbox flush.
COMMAND_GRACE_SECONDS = 20.0
OUTBOX_FLUSH_SECONDS = 5.0


def make_app(
    bot: Any,
    settings: Settings,
    *,
    slack: Any = None,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    """The HTTP face of one bot: /healthz, /readyz, /slack/events (when `slack`), and `extra_routes`."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[DRAINING] = {"draining": False}
    app[SLACK_AUTH] = {"ok": None}  # None: not checked yet; False: Slack refused the token
    app[BOT] = bot

    async def healthz(request: web.Request) -> web.Response:
        """Alive: the event loop answers. Nothing else is checked, so a slow database never restarts us."""
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        """Ready: the store answers, Slack accepted our token (when configured), the forge's repo is
        there, and we are not shutting down. Each check is named so a failing probe says which."""
        if request.app[DRAINING]["draining"]:
            return web.json_response({"ready": False, "draining": True}, status=503)
        loop = asyncio.get_running_loop()
        checks = {"store": await loop.run_in_executor(None, bot.store.ping)}
        checks["forge"] = await loop.run_in_executor(None, _forge_ready, bot)
        if slack is not None:
            checks["slack"] = request.app[SLACK_AUTH]["ok"] is not False
        ready = all(checks.values())
        return web.json_response({"ready": ready, **checks}, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if slack is not None:
        app.add_routes(slack.routes())
    app.add_routes(list(extra_routes))
    return app


def _forge_ready(bot: Any) -> bool:
    try:
        return os.path.isdir(bot.forge.repo_path())
    except Exception:
        return False


def default_routes(bot: Any, settings: Settings, github_hooks: Any = None) -> list[web.AbstractRouteDef]:
    """The webhook and metrics routes every `opsbot serve` carries (each authenticates itself)."""
    from opsbot.intake.github_routes import GitHubWebhooks
    from opsbot.metrics_routes import metrics_routes

    routes: list[web.AbstractRouteDef] = [*metrics_routes(bot.metrics, settings.metrics_token.get())]
    routes += (github_hooks or GitHubWebhooks(bot, settings)).routes()
    return routes


GITHUB_REPLAY_SECONDS = 60.0


async def _replay_github(hooks: Any, stop: asyncio.Event) -> None:
    """Deliveries whose handling failed (e.g. the database blipped) are applied again, and open PRs
    follow a base that moved without telling us; every minute, bounded by `stop`."""
    await asyncio.to_thread(hooks.replay)
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), GITHUB_REPLAY_SECONDS)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(hooks.replay, GITHUB_REPLAY_SECONDS)
        except Exception:
            log.exception("replaying pending GitHub deliveries failed")
        # the periodic check: a base moved without a webhook (the local forge, a lost delivery)
        hooks.refresher.kick()


POLICY_TICK_SECONDS = 60.0


async def _policy_ticks(bot: Any, stop: asyncio.Event, interval: float = POLICY_TICK_SECONDS) -> None:
    """Deploy windows open and close and freezes run out with no one typing anything: every
    `interval`, the `opsbot/policy` status of each open PR is re-published where its answer changed."""
    policies = getattr(bot, "policies", None)
    while policies is not None and not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(policies.tick)
        except Exception:
            log.exception("re-checking policy statuses failed")


class Server:
    """The running process: bot, Slack transport, outbox worker, Socket Mode, HTTP listener.

    `serve()` drives it from the command line; tests start it in-process on 127.0.0.1 port 0.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bot: Any = None,
        host: str = "0.0.0.0",  # a pod listens on all interfaces; tests pass 127.0.0.1
        port: int | None = None,
        extra_routes: Iterable[web.AbstractRouteDef] = (),
        transport_factory: Callable[..., Any] | None = None,
        deploys: Any = None,
    ) -> None:
        self.settings = settings
        self.deploys = deploys
        self.watch: Any = None
        self.github_hooks: Any = None
        self._replay_stop: asyncio.Event | None = None
        self._bot = bot
        self.host = host
        self.requested_port = settings.port if port is None else port
        self.extra_routes = list(extra_routes)
        self.transport_factory = transport_factory
        self.bot: Any = None
        self.slack: Any = None
        self.app: web.Application | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    async def start(self) -> None:
        from opsbot.app import Opsbot

        poster: Any = None
        groups: Any = None
        if self.settings.slack_bot_token:
            from opsbot.chat.slack import SlackPoster, user_groups
            from opsbot.metrics import DEFAULT as DEFAULT_METRICS

            metrics = self._bot.metrics if self._bot is not None else DEFAULT_METRICS
            poster = SlackPoster.from_settings(self.settings, metrics=metrics)
            # RBAC (the dispatcher's and the policies') reads the group cache the transport refreshes:
            # it is handed to the bot when the bot is built here. A bot built by the caller brings its own.
            groups = user_groups(poster, self.settings) if self._bot is None else None
        self.bot = self._bot or await asyncio.to_thread(
            functools.partial(
                Opsbot,
                self.settings,
                group_members=groups.members if groups else None,
                plan_workers=self.settings.plan_workers,
            )
        )
        repair = getattr(getattr(self.bot, "requests", None), "repair", None)
        if callable(repair):  # a PR opened just before a crash is recorded, never opened twice
            try:
                await asyncio.to_thread(repair)
            except Exception:
                log.exception("repairing requests left open by a crash failed")
        if self.settings.slack_bot_token:
            factory = self.transport_factory
            if factory is None:
                from opsbot.chat.slack import SlackTransport

                factory = SlackTransport
            self.slack = factory(self.bot, self.settings, self.bot.store, poster=poster, groups=groups)
            self._tasks.append(asyncio.create_task(self.slack.worker.run(), name="opsbot-outbox"))
            if self.settings.slack_app_token:
                self._tasks.append(asyncio.create_task(self._socket_mode(), name="opsbot-socket-mode"))
            elif not self.settings.slack_signing_secret:
                log.error(
                    "SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (HTTP mode) nor "
                    "SLACK_APP_TOKEN (Socket Mode): Slack cannot reach opsbot"
                )
        else:
            log.warning("SLACK_BOT_TOKEN is not set: serving webhooks and probes without Slack")
        from opsbot.intake.agent_routes import agent_webhook_routes
        from opsbot.intake.deploys import AgentIntake, DeployProcessor
        from opsbot.intake.watching import watch_from_settings

        if self.deploys is None:
            worker = self.slack.worker if self.slack is not None else None
            self.deploys = AgentIntake(
                DeployProcessor(self.bot, self.settings, wake=worker.wake if worker else None)
            )
        from opsbot.intake.github_routes import GitHubWebhooks

        self.github_hooks = GitHubWebhooks(self.bot, self.settings)
        self._replay_stop = asyncio.Event()
        self._tasks.append(
            asyncio.create_task(
                _replay_github(self.github_hooks, self._replay_stop), name="opsbot-github-replay"
            )
        )
        self._tasks.append(
            asyncio.create_task(_policy_ticks(self.bot, self._replay_stop), name="opsbot-policy-ticks")
        )
        routes = [
            *default_routes(self.bot, self.settings, self.github_hooks),
            *agent_webhook_routes(self.bot, self.settings, self.deploys),
            *self.extra_routes,
        ]
        self.app = make_app(self.bot, self.settings, slack=self.slack, extra_routes=routes)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        address: Any = self._runner.addresses[0]
        self.port = int(address[1])
        await self.deploys.start()  # replays pending agent events, then processes and sweeps
        self.watch = await asyncio.to_thread(watch_from_settings, self.settings, self.deploys)
        if self.watch is not None:
            self.watch.start()
        log.info("opsbot listening on %s:%d", self.host, self.port)

    async def _socket_mode(self) -> None:
        try:
            await self.slack.run_socket_mode()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Socket Mode stopped")

    async def stop(self) -> None:
        """Graceful: stop taking work, finish what was acknowledged, flush the outbox, close."""
        if self._stopped:
            return
        self._stopped = True
        if self.app is not None:
            self.app[DRAINING]["draining"] = True
        if self._replay_stop is not None:
            self._replay_stop.set()
        if self.watch is not None:
            await asyncio.to_thread(self.watch.stop)
        if self.deploys is not None:
            await self.deploys.stop()  # what is still queued stays pending in the inbox
        if self.slack is not None:
            self.slack.stop_accepting()
            self.slack.stop_socket_mode()
            await self.slack.drain(COMMAND_GRACE_SECONDS)
            self.slack.worker.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        if self.slack is not None:
            await self.slack.worker.flush(OUTBOX_FLUSH_SECONDS)
            await self.slack.close()
            self.slack.worker.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.deploys is not None:
            self.deploys.close()
        if self.bot is not None and self._bot is None:
            self.bot.close()


async def _main(settings: Settings, host: str) -> int:
    server = Server(settings, host=host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        if server.slack is not None:
            from opsbot.errors import PermanentError, TemporaryError

            try:
                await server.slack.check_auth()
                if server.app is not None:
                    server.app[SLACK_AUTH]["ok"] = True
            except PermanentError:
                if server.app is not None:
                    server.app[SLACK_AUTH]["ok"] = False
                return 2  # SlackPoster logged which setting is wrong
            except TemporaryError as exc:
                log.warning("Slack is not reachable yet (%s); carrying on", exc)
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
    return 0


def serve(settings: Settings, host: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; the exit code is 0 after a graceful shutdown, 2 for a refused token.

    `OPSBOT_HOST` (default all interfaces, as a pod needs) lets a laptop or a test bind 127.0.0.1.
    """
    logging.getLogger("opsbot").setLevel(settings.log_level.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level.upper())
    return asyncio.run(_main(settings, host or os.environ.get("OPSBOT_HOST") or "0.0.0.0"))
