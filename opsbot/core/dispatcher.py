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
from opsbot.errors import CommandError, ConfigError, DeniedError

log = logging.getLogger(__name__)

MakeContext = Callable[[Actor, Thread | None, str, bool], Context]

#: Told (command name, result) after every command; "unknown" when the text named no command.
#: How metrics see commands without the core importing a metrics library.
Observe = Callable[[str, Result], None]


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        make_context: MakeContext,
        group_members: GroupMembers | None = None,
        observe: Observe | None = None,
    ) -> None:
        self.registry = registry
        self.make_context = make_context
        self.group_members = group_members
        self.observe = observe

    def handle(self, text: str, actor: Actor, thread: Thread | None = None, *, apply: bool = True) -> Result:
        name, result = self._dispatch(text, actor, thread, apply)
        if self.observe is not None:
            try:
                self.observe(name, result)
            except Exception:  # an observer must never change what the person is told
                log.exception("command observer failed")
        return result

    def _dispatch(self, text: str, actor: Actor, thread: Thread | None, apply: bool) -> tuple[str, Result]:
        name = "unknown"
        try:
            command, intent = self.registry.parse(text)
            name = command.name
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
            return name, command.run(intent, ctx)
        except DeniedError as exc:
            log.info("denied", extra={"actor": actor.id, "command": text[:200]})
            return name, Failure(None, message=str(exc), denied=True)
        except CommandError as exc:
            return name, Failure(None, message=str(exc))
        except ConfigError as exc:
            # `.opsbot.yaml` or repo content opsbot refuses (unknown key, a path leaving the repo, an
            # alias bomb): the message names the key or file, and the person can act on it.
            return name, Failure(None, message=str(exc))
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command failed", extra={"reference": reference, "actor": actor.id})
            return name, Failure(None, reference=reference)
