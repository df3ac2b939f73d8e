"""What a command may use while it runs: settings, the planner, the forge, the store, who asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opsbot.core.model import Actor, Thread
from opsbot.core.ports import Forge, LiveReader, Store
from opsbot.core.requests import RequestLifecycle
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner, PlanOptions
from opsbot.settings import Settings

if TYPE_CHECKING:
    from opsbot.policy.engine import Policies


@dataclass
class Context:
    settings: Settings
    repo: GitRepo
    actor: Actor
    command_text: str = ""
    forge: Forge | None = None
    store: Store | None = None
    requests: RequestLifecycle | None = None
    thread: Thread | None = None
    #: True for `run` (open a PR), False for `plan` (compute and validate only)
    apply: bool = False
    #: Planner per base ref; app.py caches them per commit so a warm bot plans in one build.
    planner_for: Callable[[str], Planner] | None = None
    #: The live side of `status` (clusters named by `agent.cluster` and reachable); None: Git only.
    live: LiveReader | None = None
    #: Windows, freezes, locks, gates, audit (opsbot/policy); None where no store is at hand.
    policies: Policies | None = None

    def base_branch(self) -> str:
        return self.settings.base_branch or self.repo.default_branch()

    def planner(self, ref: str | None = None) -> Planner:
        ref = ref or self.base_branch()
        if self.planner_for is not None:
            return self.planner_for(ref)
        return Planner(
            self.repo,
            ref,
            PlanOptions(
                kubernetes_version=self.settings.kubernetes_version,
                max_replicas=self.settings.max_replicas,
                fetch_charts=self.settings.fetch_charts,
            ),
        )
