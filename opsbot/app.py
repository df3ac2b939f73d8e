"""Composition root: settings -> forge, repo, store, requests, dispatcher. Adapters meet only here."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from commands import REGISTRY
from opsbot.core.authz import GroupMembers
from opsbot.core.context import Context
from opsbot.core.dispatcher import Dispatcher
from opsbot.core.model import Actor, Request, Thread
from opsbot.core.ports import Forge, LiveReader, Store
from opsbot.core.requests import Notify, RequestLifecycle
from opsbot.core.results import Result
from opsbot.holds import hold_first_command
from opsbot.manifests.config import RepoConfig
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner, PlanOptions
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.policy.engine import Policies
from opsbot.settings import Settings
from opsbot.store import open_store

if TYPE_CHECKING:
    from opsbot.manifests.planpool import PlanPool

log = logging.getLogger(__name__)


def make_forge(settings: Settings, metrics: Metrics | None = None) -> Forge:
    if settings.forge == "github":
        from opsbot.forge.github import GitHubForge

        return GitHubForge(settings, metrics=metrics)
    from opsbot.forge.local import LocalForge

    return LocalForge(settings.repo)


def database_url(settings: Settings, forge: Forge) -> str:
    if settings.database_url:
        return settings.database_url
    state = getattr(forge, "state", None)
    if settings.forge == "local" and isinstance(state, Path) and settings.state_dir == ".opsbot-state":
        return f"sqlite:///{state / 'opsbot.db'}"
    return settings.resolved_database_url


class Opsbot:
    """One bot: what `opsbot run`, `opsbot serve` and the console all drive."""

    def __init__(
        self,
        settings: Settings,
        *,
        forge: Forge | None = None,
        store: Store | None = None,
        notify: Notify | None = None,
        group_members: GroupMembers | None = None,
        metrics: Metrics | None = None,
        live: LiveReader | None = None,
        plan_workers: int = 0,
    ) -> None:
        self.settings = settings
        self.metrics = DEFAULT_METRICS if metrics is None else metrics
        self.forge = forge or make_forge(settings, self.metrics)
        self.repo = GitRepo(self.forge.repo_path())
        self.store = store or open_store(database_url(settings, self.forge))
        self._notify_hooks: list[Notify] = [self.metrics.observe_transition]
        if notify:
            self._notify_hooks.append(notify)
        self.requests = RequestLifecycle(
            self.store,
            self.forge,
            notify=self._notify,
            parse=lambda t: REGISTRY.parse(t)[1],
            users=settings.users,
            planner_for=self.planner_for,
        )
        self.live = live if live is not None else _live_reader(settings)
        self.dispatcher = Dispatcher(
            REGISTRY, self.context, group_members, observe=self.metrics.observe_command
        )
        self._planners: dict[str, Planner] = {}
        self._lock = threading.Lock()
        self.policies = make_policies(self, group_members)
        #: with workers, plans run in child processes (`opsbot serve`); reads stay in this one
        self.plan_pool: PlanPool | None = None
        if plan_workers > 0:
            from opsbot.manifests.planpool import PlanPool

            self.plan_pool = PlanPool(
                self.forge.repo_path(),
                plan_workers,
                kubernetes_version=settings.kubernetes_version,
                max_replicas=settings.max_replicas,
                fetch_charts=settings.fetch_charts,
            )

    def on_transition(self, hook: Notify) -> None:
        self._notify_hooks.append(hook)

    def _notify(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        for hook in self._notify_hooks:
            hook(request, event, facts)

    def planner_for(self, ref: str) -> Planner:
        """Planners are cached per commit: a warm bot re-uses the index, renders and parsed files.

        With a plan pool, what is handed out sends `plan` to a worker process and builds the local
        planner (for `index`/`config` reads) only if a command asks for one.
        """
        if self.plan_pool is not None:
            from opsbot.manifests.planpool import PooledPlanner

            return cast(Planner, PooledPlanner(self.plan_pool, ref, lambda: self._local_planner(ref)))
        return self._local_planner(ref)

    def _local_planner(self, ref: str) -> Planner:
        sha = self.repo.resolve(ref)
        with self._lock:
            planner = self._planners.get(sha)
            if planner is None or planner.index.base_ref != ref:
                planner = Planner(
                    self.repo,
                    ref,
                    PlanOptions(
                        self.settings.kubernetes_version,
                        self.settings.max_replicas,
                        fetch_charts=self.settings.fetch_charts,
                    ),
                )
                if len(self._planners) > 8:
                    self._planners.pop(next(iter(self._planners)))
                self._planners[sha] = planner
            return planner

    def context(self, actor: Actor, thread: Thread | None, text: str, apply: bool) -> Context:
        return Context(
            settings=self.settings,
            repo=self.repo,
            actor=actor,
            command_text=text,
            forge=self.forge,
            store=self.store,
            requests=self.requests,
            thread=thread,
            apply=apply,
            planner_for=self.planner_for,
            live=self.live,
            policies=self.policies,
        )

    def handle(self, text: str, actor: Actor, thread: Thread | None = None, *, apply: bool = True) -> Result:
        # Plans and proposals read the mirror: bring it up to date when it is older than the bound.
        refresh = getattr(self.forge, "refresh_if_stale", None)
        if callable(refresh):
            try:
                refresh()
            except Exception as exc:
                from opsbot.core.results import Failure

                log.warning("mirror refresh failed: %s", type(exc).__name__)
                return Failure(None, message=f"Could not refresh the manifest repo mirror: {exc}")
        hold_first_command()
        return self.dispatcher.handle(text, actor, thread, apply=apply)

    def propose_as_opsbot(self, command: str) -> Request:
        """Plan and open a PR for `command` as opsbot itself (an automatic revert): no RBAC, no lock,
        since no person asked; the request still needs the env's approvals and passes its policies."""
        from opsbot.errors import CommandError
        from opsbot.manifests.planner import NothingToDo

        intent = REGISTRY.parse(command)[1]
        # The failed merge must be in the mirror, or the rollback would be planned on the old base.
        self.forge.refresh()
        planner = self.planner_for(self.settings.base_branch or self.repo.default_branch())
        try:
            change = planner.plan(intent)
        except NothingToDo as exc:
            raise CommandError(exc.message) from None
        env = planner.config.envs.get(change.env)
        actor = Actor("opsbot", "opsbot", "system")
        proposal = self.requests.propose(change, command, actor, env.approvals if env else 0)
        self.policies.after_propose(proposal.request)
        return proposal.request

    def deploy_failed(self, request: Request) -> None:
        """Told by the deploy intake when a request ends `failed` (the auto-revert hook)."""
        self.policies.on_failed(request)

    def close(self) -> None:
        if self.plan_pool is not None:
            self.plan_pool.close()
        for planner in self._planners.values():
            planner.index.persist()
        self.repo.close()
        self.store.close()
        close = getattr(self.live, "close", None)
        if callable(close):
            close()


def make_policies(bot: Opsbot, group_members: GroupMembers | None) -> Policies:
    """Policies read `.opsbot.yaml` from the base branch, post through the bot's transition hooks
    (threads) and the outbox (deploy channel), and ask Prometheus when PROMETHEUS_URL is set."""
    settings = bot.settings

    def config() -> RepoConfig:
        return bot.planner_for(settings.base_branch or bot.repo.default_branch()).config

    def post_channel(key: str, env: str, text: str) -> None:
        channel = settings.channel_for_env(env)
        if channel:  # imported here: the CLI without a deploy channel never loads the chat side
            from opsbot.chat.blocks import policy_notice
            from opsbot.notify.outbox import queue_channel_post

            queue_channel_post(bot.store, key, channel, policy_notice(text))

    gates = None
    if settings.prometheus_url:
        from opsbot.policy.prometheus import Prometheus

        gates = Prometheus(
            settings.prometheus_url, settings.prometheus_token.get(), float(settings.gate_timeout_seconds)
        )
    return Policies(
        bot.store,
        bot.forge,
        settings,
        config,
        notify=bot._notify,
        post_channel=post_channel,
        gates=gates,
        group_members=group_members,
        open_revert=bot.propose_as_opsbot,
    )


def _live_reader(settings: Settings) -> LiveReader | None:
    """The clusters of OPSBOT_WATCH give `status` its live side; imported only when configured,
    so the CLI does not pay for loading the kubernetes client."""
    if not settings.watch.strip():
        return None
    from opsbot.kube.live import live_reader_from_settings

    return live_reader_from_settings(settings)
