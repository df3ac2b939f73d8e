"""Open PRs follow their base: twelve requests on three overlay files, merged one at a time by hand.

Four fields of one overlay file per env (dev, staging, production) make twelve PRs that all touch
the same three files, so every merge leaves the others on that file conflicted. `opsbot serve`
(a process, GitHub forge on the double, webhooks delivered by the double) must re-plan each open
PR on the moved base so that the next one can be merged by hand on GitHub, and then tell each
thread exactly once that its change is live after its env's Flux reconcile event.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

from opsbot.core.model import RequestState
from opsbot.store import open_store
from tests.doubles.github import GitHubDouble, serve_in_thread
from tests.doubles.slack import BOT_TOKEN, SIGNING_SECRET, ThreadedSlackDouble
from tests.e2e.test_replicas import DEPLOY_CHANNEL, FLUX_SECRET, Replica, flux_success, healthy, wait
from tests.e2e.test_slack_flow import OPSBOT, clean_env, free_port
from tests.plugins.github import TOKEN, WEBHOOK_SECRET, push_repo
from tests.plugins.slack import CHANNEL, fleet_with_config

ENVS = ("dev", "staging", "production")
AGENTS = {env: f"apps-{env}" for env in ENVS}
CHANGES = ("scale frontend 4 in {env}", "scale worker 3 in {env}", "scale cache 2 in {env}",
           "deploy cache 7.4.0 to {env}")
WANTED_REPLICAS = {"frontend": 4, "worker": 3, "cache": 2}


@contextmanager
def one_bot(slack_url: str, tmp_path: Path) -> Iterator[tuple[Replica, GitHubDouble, str]]:
    github = GitHubDouble(tmp_path / "github", token=TOKEN)
    agents = {env: {"agent": {"kind": "flux", "name": AGENTS[env], "namespace": "flux-system",
                              "cluster": "prod-eu"}} for env in ENVS}
    push_repo(github, fleet_with_config(tmp_path / "fleet", **agents))
    database = f"sqlite:///{tmp_path / 'opsbot.db'}"
    with ExitStack() as stack:
        running = stack.enter_context(serve_in_thread(github))
        port = free_port()
        env = clean_env() | {
            "OPSBOT_FORGE": "github",
            "GITHUB_API_URL": running.api_url,
            "GITHUB_REPOSITORY": github.full_name,
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "OPSBOT_STATE_DIR": str(tmp_path / "state"),
            "OPSBOT_DATABASE_URL": database,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack_url,
            "OPSBOT_DEPLOY_CHANNEL": DEPLOY_CHANNEL,
            "FLUX_WEBHOOK_SECRET": FLUX_SECRET,
            "OPSBOT_PORT": str(port),
            "OPSBOT_HOST": "127.0.0.1",
        }
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(OPSBOT), "serve"], env=env, cwd=tmp_path, stdout=out,
                                    stderr=subprocess.STDOUT)
        stack.callback(lambda: proc.poll() is None and (proc.kill(), proc.wait(30)))
        bot = Replica("bot", proc, port, tmp_path / "unused", log)
        wait(lambda: healthy(port), "opsbot ready", [bot])
        github.add_hook(f"http://127.0.0.1:{port}/webhooks/github", WEBHOOK_SECRET)
        yield bot, github, database


def test_twelve_prs_on_three_files_merged_by_hand_all_land_and_deploy_once(
    slack_double_thread: ThreadedSlackDouble, tmp_path: Path
) -> None:
    runner, slack = slack_double_thread, slack_double_thread.double
    with one_bot(slack.api_url, tmp_path) as (bot, github, database):
        store = open_store(database)
        try:
            # twelve asks, each its own thread root and PR
            asked: list[tuple[str, str]] = []
            for env in ENVS:
                for change in CHANGES:
                    command = change.format(env=env)
                    runner.run(slack.send_slash_command(bot.slack_url, command, user_id="U0ALICE",
                                                        user_name="alice", channel_id=CHANNEL))
                    count = len(asked)
                    wait(lambda n=count: len(slack.messages(CHANNEL)) > n, f"the root of {command!r}", [bot])
                    asked.append((env, command))
            # a root is recorded on its request just after Slack answers the post: wait for all twelve
            wait(lambda: sum(1 for r in store.list_requests(limit=50) if r.thread_ts) == 12,
                 "the twelve roots recorded", [bot])
            roots = slack.messages(CHANNEL)
            requests = {r.thread_ts: r for r in store.list_requests(limit=50)}
            assert len(roots) == 12 and len(requests) == 12 and len(github.open_pulls()) == 12
            # production needs one approval: bob gives it in chat, before any base moves
            for root, (env, _command) in zip(roots, asked, strict=True):
                if env == "production":
                    runner.run(slack.send_click(bot.slack_url, root, "opsbot_approve", user_id="U0BOB",
                                                user_name="bob"))
            wait(lambda: len(store.list_requests(states=[RequestState.APPROVED])) == 4, "four approvals", [bot])

            # one at a time, by hand on GitHub; GitHub tells opsbot; Flux reconciles that env
            for root, (env, command) in zip(roots, asked, strict=True):
                rid = requests[root.ts].id
                number = store.get_request(rid).pr_number
                main = github.branch_sha("main")
                # every open PR follows main before the next merge (what a person would see on GitHub)
                wait(lambda main=main: all(r.base_sha == main for r in store.list_requests(
                    states=[RequestState.PROPOSED, RequestState.APPROVED])), "open PRs re-planned on main", [bot])
                merge = github.merge_by_hand(number, user="carol")  # raises 405 if still conflicted
                for delivery in github.deliver():
                    assert delivery.status in (200, 204), (delivery.event, delivery.status, delivery.body)
                wait(lambda rid=rid: store.get_request(rid).state is RequestState.MERGED, f"{command!r} merged", [bot])
                payload = flux_success(merge)
                payload["involvedObject"]["name"] = AGENTS[env]
                assert bot.flux(payload) == 202
                wait(lambda rid=rid: store.get_request(rid).state is RequestState.DEPLOYED, f"{command!r} live",
                     [bot])

            wait(lambda: not store.inbox_pending() and not store.outbox_due(datetime(2100, 1, 1, tzinfo=UTC)),
                 "every queued post done", [bot])
            assert [r.state for r in store.list_requests(limit=50)] == [RequestState.DEPLOYED] * 12
            assert github.open_pulls() == []
            for env in ENVS:
                overlay = yaml.safe_load(github.show("main", f"overlays/{env}/kustomization.yaml"))
                replicas = {r["name"]: r["count"] for r in overlay["replicas"]}
                assert {app: replicas.get(app) for app in WANTED_REPLICAS} == WANTED_REPLICAS, (env, overlay)
                assert {"name": "redis", "newTag": "7.4.0"} in overlay["images"], (env, overlay)
            for root, (env, _command) in zip(roots, asked, strict=True):
                thread = [m.all_text() for m in slack.replies(CHANNEL, root.ts)]
                lives = [t for t in thread if t.startswith("🚀")]
                assert len(lives) == 1 and lives[0].startswith(f"🚀 Live in {env} — "), thread
                # nothing asked for approval again: each rebase kept the same effect
                assert not [t for t in thread if "approval is needed again" in t], thread
            assert len(slack.messages(DEPLOY_CHANNEL)) == 12
        finally:
            store.close()
        bot.proc.send_signal(signal.SIGTERM)
        assert bot.proc.wait(60) == 0, bot.log.read_text()[-3000:]
