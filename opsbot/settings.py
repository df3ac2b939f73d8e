"""Typed bot settings, read once at start from environment variables and an optional YAML file.

Why one object: every adapter reads the same validated values, errors name the exact variable, and
secrets are wrapped so that no `repr`, log line or f-string can print them by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from opsbot.errors import ConfigError


class Secret:
    """A string that never shows itself: `str()`, `repr()` and f-strings print `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Role:
    name: str
    commands: frozenset[str]  # verbs, or "*"
    envs: frozenset[str]  # env names, or "*"

    def allows(self, verb: str, env: str | None) -> bool:
        verb_ok = "*" in self.commands or verb in self.commands
        env_ok = env is None or "*" in self.envs or env in self.envs
        return verb_ok and env_ok


@dataclass(frozen=True)
class RbacSettings:
    """Roles grant verbs per env; members are Slack user ids or user groups (`group:S123`).

    Without any roles configured, non-protected envs are open to everyone (a team trying opsbot);
    a protected env is always deny-by-default and needs a role that names it.
    """

    roles: tuple[Role, ...] = ()
    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    protected_envs: frozenset[str] = frozenset()
    group_cache_seconds: int = 300

    @property
    def enabled(self) -> bool:
        return bool(self.roles)


@dataclass(frozen=True)
class Settings:
    repo: str = "."
    forge: str = "local"
    state_dir: str = ".opsbot-state"
    database_url: str = ""
    base_branch: str = ""
    kubernetes_version: str = "1.37"
    max_replicas: int = 50
    #: `opsbot serve` plans in this many worker processes (0: in threads of the server process)
    plan_workers: int = 2
    #: pull Helm charts that are not in the repo (for the render proof); off: that proof says skipped
    fetch_charts: bool = True

    github_api_url: str = "https://api.github.com"
    github_repository: str = ""
    github_token: Secret = field(default_factory=lambda: Secret(""))
    github_app_id: str = ""
    github_app_private_key: Secret = field(default_factory=lambda: Secret(""))
    github_app_installation_id: str = ""
    github_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    github_merge_method: str = "merge"
    mirror_max_age_seconds: int = 60

    slack_bot_token: Secret = field(default_factory=lambda: Secret(""))
    slack_signing_secret: Secret = field(default_factory=lambda: Secret(""))
    slack_app_token: Secret = field(default_factory=lambda: Secret(""))
    slack_api_url: str = "https://slack.com/api/"
    deploy_channel: str = ""
    env_channels: Mapping[str, str] = field(default_factory=dict)
    approvals_mode: str = "chat"  # chat | github
    #: Slack user id -> GitHub login, so four-eyes holds across chat and GitHub (the requester's own
    #: review on GitHub never counts) and PR bodies can name the requester as GitHub knows them.
    users: Mapping[str, str] = field(default_factory=dict)

    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    flux_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    argocd_webhook_token: Secret = field(default_factory=lambda: Secret(""))
    max_body_bytes: int = 1_000_000
    deploy_timeout_seconds: int = 900
    #: Watch mode (opsbot/intake/watching.py): comma-separated `<cluster>[=<context>]`, where
    #: <context> is a kubeconfig context or `in-cluster` (default: a context named like the cluster).
    watch: str = ""
    #: Namespace of the watch Lease (one replica watches); default: the pod's own namespace.
    watch_lease_namespace: str = ""

    #: Metric gates (docs/policies.md): the Prometheus HTTP API, an optional bearer token, and how
    #: long one gate query may take before it counts as *unknown* (which blocks the merge).
    prometheus_url: str = ""
    prometheus_token: Secret = field(default_factory=lambda: Secret(""))
    gate_timeout_seconds: int = 10

    port: int = 3000
    log_level: str = "INFO"
    rbac: RbacSettings = field(default_factory=RbacSettings)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.state_dir).absolute() / 'opsbot.db'}"

    def channel_for_env(self, env: str) -> str:
        return self.env_channels.get(env, self.deploy_channel)

    def github_login(self, user: str) -> str:
        """The GitHub login of a chat user, or "" when `users` does not map them."""
        return self.users.get(user, "")


#: env var -> settings field; the DESIGN §4 names.
ENV_VARS: dict[str, str] = {
    "OPSBOT_REPO": "repo",
    "OPSBOT_FORGE": "forge",
    "OPSBOT_STATE_DIR": "state_dir",
    "OPSBOT_DATABASE_URL": "database_url",
    "OPSBOT_BASE_BRANCH": "base_branch",
    "OPSBOT_KUBERNETES_VERSION": "kubernetes_version",
    "OPSBOT_MAX_REPLICAS": "max_replicas",
    "OPSBOT_PLAN_WORKERS": "plan_workers",
    "OPSBOT_FETCH_CHARTS": "fetch_charts",
    "GITHUB_API_URL": "github_api_url",
    "GITHUB_REPOSITORY": "github_repository",
    "GITHUB_TOKEN": "github_token",
    "GITHUB_APP_ID": "github_app_id",
    "GITHUB_APP_PRIVATE_KEY": "github_app_private_key",
    "GITHUB_APP_INSTALLATION_ID": "github_app_installation_id",
    "GITHUB_WEBHOOK_SECRET": "github_webhook_secret",
    "OPSBOT_MERGE_METHOD": "github_merge_method",
    "OPSBOT_MIRROR_MAX_AGE": "mirror_max_age_seconds",
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_APP_TOKEN": "slack_app_token",
    "SLACK_API_URL": "slack_api_url",
    "OPSBOT_DEPLOY_CHANNEL": "deploy_channel",
    "OPSBOT_APPROVALS_MODE": "approvals_mode",
    "OPSBOT_USERS": "users",
    "OPSBOT_METRICS_TOKEN": "metrics_token",
    "FLUX_WEBHOOK_SECRET": "flux_webhook_secret",
    "ARGOCD_WEBHOOK_TOKEN": "argocd_webhook_token",
    "OPSBOT_MAX_BODY_BYTES": "max_body_bytes",
    "OPSBOT_DEPLOY_TIMEOUT": "deploy_timeout_seconds",
    "OPSBOT_WATCH": "watch",
    "OPSBOT_WATCH_LEASE_NAMESPACE": "watch_lease_namespace",
    "PROMETHEUS_URL": "prometheus_url",
    "PROMETHEUS_TOKEN": "prometheus_token",
    "OPSBOT_GATE_TIMEOUT": "gate_timeout_seconds",
    "OPSBOT_PORT": "port",
    "OPSBOT_LOG_LEVEL": "log_level",
}

_CHOICES = {
    "forge": ("local", "github"),
    "github_merge_method": ("merge", "squash"),
    "approvals_mode": ("chat", "github"),
}


def _parse_rbac(raw: Any) -> RbacSettings:
    if raw is None:
        return RbacSettings()
    if not isinstance(raw, dict):
        raise ConfigError("rbac: expected a mapping with roles, members and protected_envs")
    roles = []
    for name, spec in (raw.get("roles") or {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"rbac.roles.{name}: expected a mapping with commands and envs")
        roles.append(
            Role(
                name=str(name),
                commands=frozenset(str(c).lower() for c in spec.get("commands") or ["*"]),
                envs=frozenset(str(e) for e in spec.get("envs") or ["*"]),
            )
        )
    members_raw = raw.get("members") or {}
    if not isinstance(members_raw, dict):
        raise ConfigError("rbac.members: expected a mapping of role -> list of user ids or group:ID")
    members = {}
    for role, who in members_raw.items():
        if role not in {r.name for r in roles}:
            raise ConfigError(
                f"rbac.members.{role}: no such role (roles: {', '.join(r.name for r in roles)})"
            )
        members[str(role)] = tuple(str(w) for w in (who or []))
    return RbacSettings(
        roles=tuple(roles),
        members=members,
        protected_envs=frozenset(str(e) for e in raw.get("protected_envs") or []),
        group_cache_seconds=int(raw.get("group_cache_seconds", 300)),
    )


_SLACK_USER_ID = re.compile(r"\A[UW][A-Z0-9]{2,}\Z")
#: GitHub's rule: alphanumerics and single hyphens, not at either end, at most 39 characters.
_GITHUB_LOGIN = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}\Z")


def _parse_users(value: Any) -> dict[str, str]:
    """`{U123: octocat}` from the file, or `U123=octocat,U456=hubot` from OPSBOT_USERS.

    Why so strict: a typo here silently re-opens the four-eyes gap this mapping closes, and one
    login claimed by two chat users would make either one's review look like the other's.
    """
    if isinstance(value, str):
        pairs: list[tuple[str, str]] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            user, sep, login = (s.strip() for s in part.partition("="))
            if not sep:
                raise ConfigError(f"OPSBOT_USERS: {part!r} is not <slack user id>=<github login>")
            pairs.append((user, login))
    elif isinstance(value, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
    else:
        raise ConfigError("users: expected a mapping of Slack user id -> GitHub login")
    users: dict[str, str] = {}
    owners: dict[str, str] = {}
    for user, login in pairs:
        if not _SLACK_USER_ID.match(user):
            raise ConfigError(f"users: {user!r} is not a Slack user id (like U012ABCDEF)")
        if not _GITHUB_LOGIN.match(login):
            raise ConfigError(f"users.{user}: {login!r} is not a GitHub login")
        if user in users:
            raise ConfigError(f"users: {user} is listed twice")
        other = owners.get(login.lower())
        if other is not None:
            raise ConfigError(f"users: GitHub login {login!r} is mapped to both {other} and {user}")
        users[user] = login
        owners[login.lower()] = user
    return users


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f for f in fields(Settings)}
    default = kinds[name].default
    factory = kinds[name].default_factory
    sample = factory() if callable(factory) else default
    if isinstance(sample, Secret):
        return value if isinstance(value, Secret) else Secret(str(value))
    if isinstance(sample, bool):
        return str(value).lower() in ("1", "true", "yes", "on")
    if isinstance(sample, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
    if name == "users":
        return _parse_users(value)
    if name == "env_channels":
        if not isinstance(value, dict):
            raise ConfigError("env_channels: expected a mapping of env -> channel id")
        return {str(k): str(v) for k, v in value.items()}
    return str(value)


def load_settings(
    environ: Mapping[str, str] | None = None, file: str | None = None, **overrides: Any
) -> Settings:
    """Settings from (lowest first) defaults, a YAML file, the environment, then explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = file or environ.get("OPSBOT_SETTINGS_FILE")
    rbac = RbacSettings()
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"settings file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"settings file {path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"settings file {path}: expected a mapping at the top")
        known = {f.name for f in fields(Settings)}
        for key, value in raw.items():
            if key == "rbac":
                rbac = _parse_rbac(value)
            elif key in known:
                values[key] = _coerce(key, value)
            else:
                raise ConfigError(f"settings file {path}: unknown key {key!r}")
    for var, name in ENV_VARS.items():
        if var in environ and environ[var] != "":
            values[name] = _coerce(name, environ[var])
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value) if name != "rbac" else value
    if "rbac" not in overrides:
        values["rbac"] = rbac
    for name, allowed in _CHOICES.items():
        if name in values and values[name] not in allowed:
            var = next((v for v, n in ENV_VARS.items() if n == name), name)
            raise ConfigError(f"{var}: expected one of {', '.join(allowed)}, got {values[name]!r}")
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.forge == "github":
        if not s.github_repository or "/" not in s.github_repository:
            raise ConfigError("GITHUB_REPOSITORY: set it to owner/name when OPSBOT_FORGE=github")
        if not s.github_token and not (
            s.github_app_id and s.github_app_private_key and s.github_app_installation_id
        ):
            raise ConfigError(
                "GitHub auth: set GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY + GITHUB_APP_INSTALLATION_ID"
            )
    if not (0 < s.port < 65536):
        raise ConfigError(f"OPSBOT_PORT: {s.port} is not a TCP port")
    if s.max_replicas < 1:
        raise ConfigError("OPSBOT_MAX_REPLICAS: must be at least 1")
    if not 0 <= s.plan_workers <= 32:
        raise ConfigError("OPSBOT_PLAN_WORKERS: must be between 0 and 32")
    if s.deploy_timeout_seconds < 1:
        raise ConfigError("OPSBOT_DEPLOY_TIMEOUT: must be at least 1 (seconds)")
    if s.prometheus_url and not re.match(r"https?://[^/\s]+", s.prometheus_url):
        raise ConfigError(f"PROMETHEUS_URL: expected http(s)://host[:port][/path], got {s.prometheus_url!r}")
    if s.gate_timeout_seconds < 1:
        raise ConfigError("OPSBOT_GATE_TIMEOUT: must be at least 1 (seconds)")
    for spec in (part.strip() for part in s.watch.split(",")):
        cluster, _, context = spec.partition("=")
        if spec and (not cluster.strip() or ("=" in spec and not context.strip())):
            raise ConfigError(
                f"OPSBOT_WATCH: {spec!r} is not <cluster>[=<context>] (e.g. prod-eu=in-cluster,staging)"
            )
