"""Typed settings: env vars and file, clear errors naming the variable, secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.errors import ConfigError
from opsbot.settings import Secret, load_settings


def test_defaults_and_env_vars() -> None:
    s = load_settings(environ={"OPSBOT_PORT": "8080", "SLACK_BOT_TOKEN": "xoxb-123", "OPSBOT_FORGE": "local"})
    assert s.port == 8080 and s.forge == "local"
    assert s.slack_bot_token.get() == "xoxb-123"
    assert "xoxb-123" not in repr(s) and "xoxb-123" not in str(s.slack_bot_token) and "xoxb" not in f"{s}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPSBOT_PORT": "eighty"}, "port: expected a whole number"),
        ({"OPSBOT_PORT": "70000"}, "OPSBOT_PORT: 70000 is not a TCP port"),
        ({"OPSBOT_FORGE": "gitlab"}, "OPSBOT_FORGE: expected one of local, github"),
        ({"OPSBOT_FORGE": "github"}, "GITHUB_REPOSITORY"),
        ({"OPSBOT_FORGE": "github", "GITHUB_REPOSITORY": "o/r"}, "GitHub auth"),
        ({"OPSBOT_APPROVALS_MODE": "email"}, "OPSBOT_APPROVALS_MODE"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_settings_file_with_rbac(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "port: 4000\nrbac:\n  roles:\n    deployer: {commands: [scale], envs: [dev]}\n"
        "  members:\n    deployer: [U1, 'group:S1']\n  protected_envs: [production]\n"
    )
    s = load_settings(environ={"OPSBOT_PORT": "5000"}, file=str(f))
    assert s.port == 5000  # the environment wins over the file
    assert s.rbac.enabled and s.rbac.members["deployer"] == ("U1", "group:S1")
    assert s.rbac.protected_envs == frozenset({"production"})
    f.write_text("rbac:\n  members:\n    ghost: [U1]\n")
    with pytest.raises(ConfigError, match=r"rbac\.members\.ghost: no such role"):
        load_settings(environ={}, file=str(f))
    f.write_text("colour: blue\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_settings(environ={}, file=str(f))


def test_secret_equality_without_exposure() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and str(Secret("x")) == "***"
