"""RBAC: roles grant verbs per env, protected envs deny by default, denials name the missing role."""

from __future__ import annotations

import pytest

from opsbot.core.authz import authorize
from opsbot.core.model import Actor
from opsbot.errors import DeniedError
from opsbot.settings import RbacSettings, Role

RBAC = RbacSettings(
    roles=(
        Role("deployer", frozenset({"scale", "promote", "deploy", "rollback"}), frozenset({"dev", "staging"})),
        Role("prod-deployer", frozenset({"scale", "promote", "deploy", "rollback"}), frozenset({"production"})),
        Role("approver", frozenset({"approve", "merge", "cancel"}), frozenset({"*"})),
    ),
    members={"deployer": ("U1", "group:S9"), "prod-deployer": ("U2",), "approver": ("U3",)},
    protected_envs=frozenset({"production"}),
)


def groups(group: str) -> list[str]:
    return {"S9": ["U7"]}.get(group, [])


@pytest.mark.parametrize(
    ("user", "verb", "env"),
    [("U1", "scale", "dev"), ("U7", "deploy", "staging"), ("U2", "promote", "production"),
     ("U3", "approve", "production"), ("U9", "status", "production"), ("U9", "help", None)],
)
def test_allowed(user: str, verb: str, env: str | None) -> None:
    authorize(RBAC, Actor(user), verb, env, groups)


@pytest.mark.parametrize(
    ("user", "verb", "env", "message"),
    [
        ("U1", "scale", "production", "needs the role prod-deployer, and you have deployer"),
        ("U9", "scale", "dev", "needs the role deployer, and you have no role"),
        ("U7", "merge", "dev", "needs the role approver"),
        ("U2", "create", None, "No role allows `create`"),
    ],
)
def test_denied_names_the_missing_role(user: str, verb: str, env: str | None, message: str) -> None:
    with pytest.raises(DeniedError, match=message):
        authorize(RBAC, Actor(user), verb, env, groups)


def test_protected_env_is_deny_by_default_without_roles() -> None:
    open_rbac = RbacSettings(protected_envs=frozenset({"production"}))
    authorize(open_rbac, Actor("anyone"), "scale", "staging")
    with pytest.raises(DeniedError, match="production is protected"):
        authorize(open_rbac, Actor("anyone"), "scale", "production")


def test_group_membership_is_resolved_only_through_the_resolver() -> None:
    with pytest.raises(DeniedError):
        authorize(RBAC, Actor("U7"), "scale", "dev", None)


def test_chat_roles_match_ids_never_the_user_name() -> None:
    """Issue 9 item 5: a Slack user who renames themselves to "U2" must not become prod-deployer."""
    impostor = Actor("U9", "U2", "chat")
    with pytest.raises(DeniedError, match="you have no role"):
        authorize(RBAC, impostor, "scale", "production", groups)
    with pytest.raises(DeniedError, match="you have no role"):
        authorize(RBAC, Actor("U9", "group:S9", "chat"), "scale", "dev", groups)


def test_cli_users_are_matched_by_name() -> None:
    named = RbacSettings(roles=RBAC.roles, members={"prod-deployer": ("alice",)},
                         protected_envs=RBAC.protected_envs)
    authorize(named, Actor("alice", "alice", "cli"), "scale", "production", groups)
    with pytest.raises(DeniedError):
        authorize(named, Actor("U5", "alice", "chat"), "scale", "production", groups)
