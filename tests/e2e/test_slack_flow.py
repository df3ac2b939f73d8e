"""docs/slack.md, followed to the letter: `opsbot serve` as a process, Slack as the double.

Every command the page shows is run here (the shell lines, the Slack lines, the settings file),
and `test_the_doc_shows_only_what_is_tested` fails when the page grows a command this file does not
run. The process talks only to 127.0.0.1: the double stands in for slack.com via SLACK_API_URL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from opsbot.chat.slack import BUTTON_VERBS, COMMAND, EVENTS_PATH
from opsbot.settings import load_settings
from tests.doubles.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    ThreadedSlackDouble,
    slash_command_body,
)
from tests.plugins.slack import CHANNEL, fleet_with_config, readable

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "slack.md"
MANIFEST = ROOT / "deploy" / "slack" / "app-manifest.yaml"
OPSBOT = Path(sys.executable).parent / "opsbot"

#: What the page shows, in the order a newcomer runs it; the tests below run exactly these.
SHELL_LINES = ["opsbot serve", "curl -s http://localhost:3000/healthz", "curl -s http://localhost:3000/readyz"]
SLACK_LINES = ["/invite @opsbot", "/ops help", "/ops status frontend", "/ops scale frontend 5 in production"]
SOCKET_EXPORTS = ["OPSBOT_REPO", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"]
HTTP_EXPORTS = ["OPSBOT_REPO", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
SETTINGS_USES = ["opsbot --settings opsbot.yaml serve", "OPSBOT_SETTINGS_FILE=opsbot.yaml"]


def fenced() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the page."""
    blocks: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "unclosed code block"
    return blocks


def code_blocks(lang: str) -> list[str]:
    return [body for block_lang, body in fenced() if block_lang == lang]


def doc_settings_yaml() -> str:
    (block,) = code_blocks("yaml")
    return block


# --------------------------------------------------------------------------------------------- running it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The test runner's environment without anything that would configure opsbot behind our back."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "OPSBOT_", "GITHUB_", "FLUX_", "ARGOCD_"))}


def curl(line: str, port: int) -> str:
    """Run one of the page's curl lines, on our port and on 127.0.0.1 (never a name lookup)."""
    args = line.replace("localhost:3000", f"127.0.0.1:{port}").split()
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


@contextmanager
def opsbot_serve(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([str(OPSBOT), *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"opsbot serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"opsbot serve did not come up:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def ephemerals(runner: ThreadedSlackDouble, user: str) -> list[str]:
    """Only inside `runner.wait_for` predicates, which run on the double's own loop."""
    return [readable(e.blocks, e.text) for e in runner.double.ephemerals(user=user)]


def no_secret_in(text: str) -> None:
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in text


# --------------------------------------------------------------------------------------------- the page


def test_the_doc_shows_only_what_is_tested() -> None:
    shell = [ln.strip() for block in code_blocks("sh") for ln in block.splitlines() if ln.strip()]
    exports = [ln.split("=", 1)[0].removeprefix("export ") for ln in shell if ln.startswith("export ")]
    commands = [ln for ln in shell if not ln.startswith("export ")]
    assert sorted(set(commands)) == sorted(SHELL_LINES)
    assert exports == SOCKET_EXPORTS + HTTP_EXPORTS
    slack = [ln.strip() for block in code_blocks("text") for ln in block.splitlines() if ln.strip()]
    assert slack == SLACK_LINES
    for use in SETTINGS_USES:
        assert use in DOC.read_text()
    assert {lang for lang, _body in fenced()} == {"sh", "text", "yaml"}  # nothing shown goes unchecked


def test_the_docs_settings_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(doc_settings_yaml())
    settings = load_settings(environ={}, file=str(path))
    assert settings.channel_for_env("production") == "C0PRODDEPLOY"
    assert settings.channel_for_env("staging") == "C0DEPLOY"
    assert settings.rbac.protected_envs == {"production"}
    assert settings.rbac.members["deployers"] == ("group:S0DEPLOY",)


def test_the_app_manifest_matches_the_code() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == COMMAND and command["usage_hint"]
    assert command["url"].endswith(EVENTS_PATH)
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["interactivity"]["request_url"].endswith(EVENTS_PATH)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "chat:write", "chat:write.public", "commands", "usergroups:read"}
    assert set(BUTTON_VERBS.values()) == {"approve", "merge", "cancel"}
    for scope in manifest["oauth_config"]["scopes"]["bot"]:
        assert f"`{scope}`" in DOC.read_text()  # every scope is explained to the person installing it


def test_socket_mode_as_in_the_docs(slack_double_thread: ThreadedSlackDouble, tmp_path: Path) -> None:
    runner, double = slack_double_thread, slack_double_thread.double
    repo = fleet_with_config(tmp_path / "manifests")
    port = free_port()
    env = clean_env() | {
        "OPSBOT_REPO": str(repo),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_APP_TOKEN": APP_TOKEN,
        # not on the page: where "Slack" is, the port, and the interface (tests stay on 127.0.0.1)
        "SLACK_API_URL": double.api_url,
        "OPSBOT_PORT": str(port),
        "OPSBOT_HOST": "127.0.0.1",
    }
    log = tmp_path / "serve.log"
    with opsbot_serve(SHELL_LINES[0].split()[1:], env, tmp_path, log) as proc:
        wait_healthy(proc, port, log)
        assert curl(SHELL_LINES[1], port) == "ok"
        assert json.loads(curl(SHELL_LINES[2], port))["ready"] is True
        runner.wait_for(lambda: double.open_socket_connections, timeout=30, what="Socket Mode")

        # before `/invite @opsbot`: the bot is not in the (private) channel, and says how to fix it
        double.set_channel_error(CHANNEL, "not_in_channel")
        scale = SLACK_LINES[3].removeprefix("/ops ")
        ack = runner.run(double.push_slash_command(scale, user_id="U0ALICE", user_name="alice"))
        assert "Working on" in ack["payload"]["text"]
        runner.wait_for(lambda: any("/invite @opsbot" in e for e in ephemerals(runner, "U0ALICE")),
                        timeout=60, what="the invite hint")
        double.set_channel_error(CHANNEL, None)  # SLACK_LINES[0]: the bot is invited

        runner.run(double.push_slash_command(SLACK_LINES[1].removeprefix("/ops "), user_id="U0ALICE"))
        runner.wait_for(lambda: any("opsbot commands" in e for e in ephemerals(runner, "U0ALICE")),
                        timeout=30, what="help")
        runner.run(double.push_slash_command(SLACK_LINES[2].removeprefix("/ops "), user_id="U0ALICE"))
        runner.wait_for(lambda: any("Status of frontend" in e for e in ephemerals(runner, "U0ALICE")),
                        timeout=60, what="status")
        runner.run(double.push_slash_command(scale, user_id="U0ALICE", user_name="alice"))
        roots = runner.wait_for(lambda: double.messages(CHANNEL), timeout=60, what="the request thread")
        root = roots[0]
        assert "Scale frontend to 5 replicas in production" in root.all_text()

        runner.run(double.push_click(root, "opsbot_approve", user_id="U0BOB", user_name="bob"))
        runner.wait_for(lambda: double.replies(CHANNEL, root.ts), timeout=60, what="the approval reply")
        runner.run(double.push_click(root, "opsbot_merge", user_id="U0BOB", user_name="bob"))
        runner.wait_for(lambda: len(double.replies(CHANNEL, root.ts)) == 2, timeout=60, what="the merge reply")
        runner.wait_for(lambda: "opsbot_merge" not in root.action_ids(), timeout=60, what="the root update")
        assert stop(proc) == 0
    text = log.read_text()
    assert "connected to Slack over Socket Mode" in text
    no_secret_in(text)
    assert len(double.messages(CHANNEL)) == 1


def test_http_mode_with_the_docs_settings_file(slack_double_thread: ThreadedSlackDouble, tmp_path: Path) -> None:
    runner, double = slack_double_thread, slack_double_thread.double
    double.add_usergroup("S0DEPLOY", ["U0BOB"])
    repo = fleet_with_config(tmp_path / "manifests")
    (tmp_path / "opsbot.yaml").write_text(doc_settings_yaml())
    port = free_port()
    env = clean_env() | {
        "OPSBOT_REPO": str(repo),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": double.api_url,
        "OPSBOT_PORT": str(port),
        "OPSBOT_HOST": "127.0.0.1",
    }
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}{EVENTS_PATH}"
    with opsbot_serve(SETTINGS_USES[0].split()[1:], env, tmp_path, log) as proc:
        wait_healthy(proc, port, log)
        assert json.loads(curl(SHELL_LINES[2], port))["ready"] is True
        scale = SLACK_LINES[3].removeprefix("/ops ")

        body = slash_command_body(text=scale, response_url=double.new_response_url(channel=CHANNEL, user="U0ALICE"))
        refused = runner.run(double.send_signed(url, body, secret="not-the-secret"))
        assert refused.status == 401

        sent = runner.run(double.send_slash_command(url, scale, user_id="U0ALICE", user_name="alice"))
        assert sent.status == 200
        runner.wait_for(lambda: any("needs the role deployers" in e for e in ephemerals(runner, "U0ALICE")),
                        timeout=60, what="the denial")
        sent = runner.run(double.send_slash_command(url, scale, user_id="U0BOB", user_name="bob"))
        roots = runner.wait_for(lambda: double.messages(CHANNEL), timeout=60, what="the request thread")
        assert "requested by <@U0BOB>" in roots[0].all_text()
        assert len(double.calls_to("usergroups.users.list")) == 1
        assert stop(proc) == 0
    no_secret_in(log.read_text())


def test_a_wrong_bot_token_stops_with_a_clear_line(slack_double_thread: ThreadedSlackDouble,
                                                    tmp_path: Path) -> None:
    double = slack_double_thread.double
    (tmp_path / "opsbot.yaml").write_text(doc_settings_yaml())
    port = free_port()
    wrong = "xoxb-0000-this-token-was-revoked"
    env = clean_env() | {
        "OPSBOT_REPO": str(fleet_with_config(tmp_path / "manifests")),
        "SLACK_BOT_TOKEN": wrong,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "SLACK_API_URL": double.api_url,
        "OPSBOT_PORT": str(port),
        "OPSBOT_HOST": "127.0.0.1",
        SETTINGS_USES[1].split("=")[0]: SETTINGS_USES[1].split("=")[1],
    }
    log = tmp_path / "serve.log"
    with opsbot_serve(["serve"], env, tmp_path, log) as proc:
        assert proc.wait(90) == 2
    text = log.read_text()
    assert "Slack refused auth.test: invalid_auth (check SLACK_BOT_TOKEN" in text
    assert wrong not in text
    no_secret_in(text)


@pytest.mark.parametrize("path", [DOC, MANIFEST])
def test_no_real_secrets_in_what_we_ship(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"xox[abpr]-\d", text) and not re.search(r"xapp-\d", text)
