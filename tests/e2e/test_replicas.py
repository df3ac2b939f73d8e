"""Two `opsbot serve` replicas on one PostgreSQL (the `ha` overlay), Slack retrying across them.

Slack retries a slash command when the first answer is slow, and the retry may land on the other
replica. Both replicas here are held on their first command (a FIFO each, released by the test, so
"still planning" is a condition, not a sleep), then let go together, so both propose the same
intent at the same moment. The store must make them converge: one request, one PR, one thread
root, one "deployed" reply and one deploy-channel line, and nothing left in `proposed`.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsbot.core.model import RequestState
from opsbot.holds import ENV as HOLD_ENV
from opsbot.intake.agent_routes import FLUX_PATH
from opsbot.store import open_store
from tests.doubles.github import GitHubDouble, serve_in_thread
from tests.doubles.slack import BOT_TOKEN, SIGNING_SECRET, ThreadedSlackDouble, slash_command_body
from tests.e2e.test_slack_flow import OPSBOT, clean_env, free_port
from tests.plugins.github import TOKEN, push_repo
from tests.plugins.slack import CHANNEL, fleet_with_config, readable

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
FLUX_SECRET = "replicas-flux-hmac-secret"
DEPLOY_CHANNEL = "C0DEPLOY"
PROD_AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "prod-eu"}
GUARD = 120.0  # seconds before a wait gives up: a hang guard on a loaded machine, not a speed bar
COMMAND = "scale frontend 5 in production"


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    fifo: Path
    log: Path

    @property
    def slack_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)

    def flux(self, payload: dict[str, Any]) -> int:
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(FLUX_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self.post(FLUX_PATH, body, {"Content-Type": "application/json", "X-Signature": signature})


def wait(predicate: Any, what: str, replicas: list[Replica]) -> Any:
    """Poll a condition until it holds; a replica that died fails the test with its log."""
    deadline = time.monotonic() + GUARD
    while True:
        value = predicate()
        if value:
            return value
        for r in replicas:
            if r.proc.poll() is not None:
                raise AssertionError(f"replica {r.name} exited with {r.proc.returncode}:\n{r.log.read_text()}")
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {r.name}\n{r.log.read_text()[-4000:]}" for r in replicas)
            raise AssertionError(f"{what}: not within {GUARD}s\n{logs}")
        time.sleep(0.05)


def holding(fifo: Path) -> int | None:
    """The write end of a replica's hold FIFO once its first command waits on it (else None)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet: the command has not reached the hold
            return None
        raise


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def flux_success(sha: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / "flux" / "kustomization-succeeded.json").read_text())
    payload["metadata"] = {"revision": f"main@sha1:{sha}", "cluster": "prod-eu"}
    payload["timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return payload


@contextmanager
def two_replicas(pg_db_url: str, slack_url: str, tmp_path: Path) -> Iterator[tuple[list[Replica], GitHubDouble]]:
    github = GitHubDouble(tmp_path / "github", token=TOKEN)
    push_repo(github, fleet_with_config(tmp_path / "fleet", production={"agent": PROD_AGENT}))
    with ExitStack() as stack:
        running = stack.enter_context(serve_in_thread(github))
        replicas: list[Replica] = []
        for name in ("a", "b"):
            fifo = tmp_path / f"hold-{name}"
            os.mkfifo(fifo)
            port = free_port()
            env = clean_env() | {
                "OPSBOT_FORGE": "github",
                "GITHUB_API_URL": running.api_url,
                "GITHUB_REPOSITORY": github.full_name,
                "GITHUB_TOKEN": TOKEN,
                "OPSBOT_STATE_DIR": str(tmp_path / f"state-{name}"),  # each replica its own mirror
                "OPSBOT_DATABASE_URL": pg_db_url,  # one database for both
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack_url,
                "OPSBOT_DEPLOY_CHANNEL": DEPLOY_CHANNEL,
                "FLUX_WEBHOOK_SECRET": FLUX_SECRET,
                "OPSBOT_PORT": str(port),
                "OPSBOT_HOST": "127.0.0.1",
                HOLD_ENV: str(fifo),
            }
            log = tmp_path / f"serve-{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([str(OPSBOT), "serve"], env=env, cwd=tmp_path, stdout=out,
                                        stderr=subprocess.STDOUT)
            stack.callback(_kill, proc)
            replicas.append(Replica(name, proc, port, fifo, log))
        wait(lambda: all(healthy(r.port) for r in replicas), "both replicas ready", replicas)
        yield replicas, github


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def test_a_slack_retry_on_the_other_replica_converges_on_one_request_root_and_post(
    pg_db_url: str, slack_double_thread: ThreadedSlackDouble, tmp_path: Path
) -> None:
    runner, slack = slack_double_thread, slack_double_thread.double
    with two_replicas(pg_db_url, slack.api_url, tmp_path) as (replicas, github):
        a, b = replicas
        store = open_store(pg_db_url)
        try:
            # alice types the command; Slack delivers it to a, then (a slow answer) retries it on b
            response_url = slack.new_response_url(channel=CHANNEL, user="U0ALICE")
            body = slash_command_body(text=COMMAND, response_url=response_url, user_id="U0ALICE",
                                      user_name="alice", channel_id=CHANNEL, trigger_id="13345224609.738474920.8088930838d88f008e0")
            assert runner.run(slack.send_signed(a.slack_url, body)).status == 200
            assert runner.run(slack.send_signed(b.slack_url, body, headers={
                "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})).status == 200
            # both are "still planning" the same command; let them go at the same moment
            writers = [wait(lambda r=r: holding(r.fifo), f"replica {r.name} holding its first command", replicas)
                       for r in replicas]
            for fd in writers:
                os.close(fd)

            # both commands answered: one thread root, and the other replica told alice where it lives
            def answered() -> bool:
                return len(slack.messages(CHANNEL)) + len(slack.ephemerals(user="U0ALICE")) >= 2

            wait(answered, "both deliveries answered", replicas)
            roots = slack.messages(CHANNEL)
            assert len(roots) == 1, [m.all_text()[:80] for m in roots]
            root = roots[0]
            answers = [readable(e.blocks, e.text) for e in slack.ephemerals(user="U0ALICE")]
            assert len(answers) == 1 and "is already open for this change" in answers[0], answers
            (request,) = store.list_requests()
            assert len(github.open_pulls()) == 1
            assert (request.pr_number, request.thread_ts, request.state) == (1, root.ts, RequestState.PROPOSED)

            # bob approves on a, merges on b
            runner.run(slack.send_click(a.slack_url, root, "opsbot_approve", user_id="U0BOB", user_name="bob"))
            wait(lambda: store.transitions(request.id)[-1].to_state is RequestState.APPROVED, "approved", replicas)
            runner.run(slack.send_click(b.slack_url, root, "opsbot_merge", user_id="U0BOB", user_name="bob"))
            merged = wait(lambda: (r := store.get_request(request.id)) and r.merge_sha and r, "merged", replicas)

            # Flux tells both replicas (two notification providers, or a redelivery): one post each
            for r in replicas:
                assert r.flux(flux_success(merged.merge_sha)) == 202
            wait(lambda: store.get_request(request.id).state is RequestState.DEPLOYED, "deployed", replicas)
            wait(lambda: not store.inbox_pending() and not store.outbox_due(datetime.now(UTC).replace(year=2100)),
                 "every queued post done", replicas)

            thread = [m.all_text() for m in slack.replies(CHANNEL, root.ts)]
            assert [t.split(" ")[0] for t in thread] == ["✅", "🔀", "🚀"], thread
            assert len(slack.messages(CHANNEL)) == 1
            assert len([m for m in slack.messages(DEPLOY_CHANNEL)]) == 1
            assert [r.state for r in store.list_requests()] == [RequestState.DEPLOYED]
            assert len(github.open_pulls()) == 0
        finally:
            store.close()
        for r in replicas:
            r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            assert r.proc.wait(60) == 0, r.log.read_text()[-3000:]
