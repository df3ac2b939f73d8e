"""One dispatch path for every transport: parse -> authorize -> run -> Result.

Bolt-style: transports stay thin (ack, call `handle`, render the Result). Errors never escape as
exceptions: a CommandError becomes a Failure with its own words; anything else becomes a Failure
with a reference id, and the detail goes to the log only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

from opsbot.core.authz import GroupMembers, authorize
from opsbot.core.context import Context
from opsbot.core.model import Actor, Thread, intent_env, intent_request
from opsbot.core.registry import Registry
from opsbot.core.results import Failure, Result
from opsbot.errors import CommandError, DeniedError

log = logging.getLogger(__name__)

MakeContext = Callable[[Actor, Thread | None, str, bool], Context]


class Dispatcher:
    def __init__(
        self, registry: Registry, make_context: MakeContext, group_members: GroupMembers | None = None
    ) -> None:
        self.registry = registry
        self.make_context = make_context
        self.group_members = group_members

    def handle(self, text: str, actor: Actor, thread: Thread | None = None, *, apply: bool = True) -> Result:
        try:
            command, intent = self.registry.parse(text)
            ctx = self.make_context(actor, thread, text.strip(), apply)
            env = intent_env(intent)
            ref = intent_request(intent)
            if ref is not None and ctx.requests is not None:
                env = ctx.requests.get(ref).env or None
            rbac = ctx.settings.rbac
            if env is not None and command.kind != "read":
                repo_env = ctx.planner().config.envs.get(env)
                if repo_env is not None and repo_env.protected and env not in rbac.protected_envs:
                    rbac = replace(rbac, protected_envs=rbac.protected_envs | {env})
            authorize(rbac, actor, command.name, env, self.group_members)
            return command.run(intent, ctx)
        except DeniedError as exc:
            log.info("denied", extra={"actor": actor.id, "command": text[:200]})
            return Failure(None, message=str(exc), denied=True)
        except CommandError as exc:
            return Failure(None, message=str(exc))
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command failed", extra={"reference": reference, "actor": actor.id})
            return Failure(None, reference=reference)
