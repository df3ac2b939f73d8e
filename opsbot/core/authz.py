"""Who may do what where: roles grant verbs per env; protected envs deny by default.

Group membership is resolved through a callable (the Slack adapter asks the Web API and caches),
so this module stays pure and testable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opsbot.core.model import Actor
from opsbot.errors import DeniedError
from opsbot.settings import RbacSettings

READ_ONLY = frozenset({"status", "history", "help", "policies"})

GroupMembers = Callable[[str], Iterable[str]]


def roles_of(rbac: RbacSettings, actor: Actor, group_members: GroupMembers | None) -> set[str]:
    """The roles `actor` holds: by id, by user-group id, and by name only for CLI users.

    Why never by name in chat: a Slack display/user name is chosen by its owner, so anyone could
    rename themselves to another member's id (or name) and take that member's roles. Ids are
    assigned by Slack. A CLI user's name is the operator's own login, which is all the CLI has.
    """
    out: set[str] = set()
    for role, members in rbac.members.items():
        for m in members:
            by_name = actor.source == "cli" and bool(actor.name) and m == actor.name
            if m == actor.id or by_name or (
                m.startswith("group:") and group_members is not None and actor.id in set(group_members(m[6:]))
            ):
                out.add(role)
    return out


def authorize(
    rbac: RbacSettings, actor: Actor, verb: str, env: str | None, group_members: GroupMembers | None = None
) -> None:
    """Raise DeniedError naming the role that is missing; return when allowed."""
    if verb in READ_ONLY:
        return
    protected = env is not None and env in rbac.protected_envs
    if not rbac.enabled:
        if protected:
            raise DeniedError(
                f"{env} is protected and no roles are configured, so nobody may {verb} there. "
                "An admin must add a role for it under rbac.roles in the settings file."
            )
        return
    mine = roles_of(rbac, actor, group_members)
    if any(r.name in mine and r.allows(verb, env) for r in rbac.roles):
        return
    granting = [r.name for r in rbac.roles if r.allows(verb, env)]
    where = f" in {env}" if env else ""
    if not granting:
        raise DeniedError(f"No role allows `{verb}`{where}. Ask an admin to add one under rbac.roles.")
    raise DeniedError(
        f"You may not `{verb}`{where}: that needs the role {' or '.join(granting)}"
        f"{', and you have ' + ', '.join(sorted(mine)) if mine else ', and you have no role'}."
    )
