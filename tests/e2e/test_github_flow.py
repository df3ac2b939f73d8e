"""End to end on the GitHub double: the real `opsbot` CLI opens, updates and merges PRs on a real
bare repository behind GitHub's REST and smart-HTTP protocols, and the real aiohttp webhook route
of a running bot learns from the double's signed webhooks what happened to them.

Two processes meet in one SQLite store, as `opsbot run` on a laptop and `opsbot serve` would: the
CLI (a subprocess with OPSBOT_FORGE=github, or `opsbot.cli.main` in-process where a fake clock must
stand in for GitHub's Retry-After) and the receiving bot (in this process, its own mirror).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsbot.core.model import Request, RequestState, utcnow
from opsbot.settings import Settings, load_settings
from tests.doubles.github import Delivery, GitHubDouble, RunningDouble, serve_in_thread
from tests.plugins.github import TOKEN, WEBHOOK_SECRET, FakeClock, Receiver, push_repo, webhook_receiver
from tests.repos import make_repo

OPSBOT = str(Path(sys.executable).with_name("opsbot"))
PROD = "overlays/production/kustomization.yaml"
CMD = "scale frontend 3 in production"
DEPLOY_CHANNEL = "CDEPLOY"
APP_ID = "12345"
MERGE_REFUSED = (
    "opsbot: GitHub refused to merge PR #1: At least 1 approving review is required by reviewers with "
    "write access. It needs approving reviews on GitHub first."
)
OPEN_REFUSED = (
    "opsbot: The PR could not be opened: GitHub refused opening the pull request for {branch}: "
    "Resource not accessible by integration (403). Does the token have write access to acme/fleet?"
)

CONFIG_WITH_APPROVALS = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production: {path: overlays/production, promote_from: staging, approvals: 1}
"""


@dataclass
class World:
    double: GitHubDouble
    running: RunningDouble
    receiver: Receiver
    env: dict[str, str]
    cwd: Path

    # ------------------------------------------------------------------ the CLI, as a user runs it

    def cli(self, *args: str, user: str = "alice", ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [OPSBOT, *args],
            env={**self.env, "OPSBOT_USER": user},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        for secret in (TOKEN, WEBHOOK_SECRET):
            assert secret not in proc.stdout + proc.stderr
        if ok:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def cli_json(self, *args: str, user: str = "alice") -> dict[str, Any]:
        out = json.loads(self.cli(*args, "--json", user=user).stdout)
        assert isinstance(out, dict)
        return out

    # ------------------------------------------------------------------ what GitHub and the store hold

    @property
    def store(self) -> Any:
        return self.receiver.bot.store

    def request(self, rid: str) -> Request:
        req = self.store.get_request(rid)
        assert req is not None
        return req

    def main(self) -> str:
        sha = self.double.branch_sha("main")
        assert sha
        return sha

    def opsbot_branches(self) -> list[str]:
        out = self.double.repo.git("for-each-ref", "--format=%(refname:short)", "refs/heads/opsbot/")
        return out.split()

    def deliver(self, *events: str) -> list[Delivery]:
        """GitHub's hookshot sends what happened so far; the bot's background fetches then finish."""
        sent = self.double.deliver(events or None)
        self.receiver.idle()
        for d in sent:
            assert d.status in (200, 204), (d.event, d.status, d.body)
        return sent


def _clean_environ() -> dict[str, str]:
    """The host's environment minus anything that could point opsbot elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    with ExitStack() as stack:

        def make(
            approvals_mode: str = "chat",
            *,
            log_level: str = "WARNING",
            app_public_key: str | None = None,
            extra_env: dict[str, str] | None = None,
        ) -> World:
            double = GitHubDouble(
                tmp_path / "github", token=TOKEN, app_id=APP_ID, app_public_key=app_public_key
            )
            push_repo(double, make_repo("fleet", tmp_path / "fleet-src"))
            running = stack.enter_context(serve_in_thread(double))
            cli_state = tmp_path / "cli-state"
            cli_state.mkdir()
            # the server side reads the variables docs/github.md tells people to set
            settings = load_settings(
                environ={
                    "OPSBOT_FORGE": "github",
                    "GITHUB_API_URL": running.api_url,
                    "GITHUB_REPOSITORY": double.full_name,
                    "GITHUB_TOKEN": TOKEN,
                    "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "OPSBOT_DEPLOY_CHANNEL": DEPLOY_CHANNEL,
                    "OPSBOT_APPROVALS_MODE": approvals_mode,
                    "OPSBOT_STATE_DIR": str(tmp_path / "server-state"),
                    "OPSBOT_DATABASE_URL": f"sqlite:///{(cli_state / 'opsbot.db').absolute()}",
                    **(extra_env or {}),
                }
            )
            receiver = stack.enter_context(webhook_receiver(settings))
            double.add_hook(receiver.url, WEBHOOK_SECRET)
            env = {
                **_clean_environ(),
                "OPSBOT_FORGE": "github",
                "GITHUB_API_URL": running.api_url,
                "GITHUB_REPOSITORY": double.full_name,
                "GITHUB_TOKEN": TOKEN,
                "OPSBOT_STATE_DIR": str(cli_state),
                "OPSBOT_LOG_LEVEL": log_level,
                **(extra_env or {}),
            }
            return World(double, running, receiver, env, tmp_path)

        yield make


def _hunks(diff: str) -> list[str]:
    """A unified diff without git's own header lines and hunk-heading context, for comparing."""
    keep = []
    for line in diff.splitlines():
        if line.startswith(("diff --git", "index ")):
            continue
        if line.startswith("@@"):
            line = re.sub(r"^(@@ [^@]* @@).*$", r"\1", line)
        keep.append(line)
    return keep


def _scaled_down(double: GitHubDouble) -> str:
    """A teammate's commit on GitHub so that `scale frontend 3` is a change (the sample has 3)."""
    text = double.show("main", PROD)
    assert text.count("count: 3") == 1
    return double.commit_files(
        "main", {PROD: text.replace("count: 3", "count: 2")}, message="Scale frontend down", author="carol"
    )


# ------------------------------------------------------------------------------------------- the flow


def test_run_opens_the_minimal_pr_merge_makes_a_merge_commit_and_the_webhook_agrees(
    make_world: Callable[..., World],
) -> None:
    w = make_world(log_level="DEBUG")  # every log line is checked for secrets by `cli`
    _scaled_down(w.double)
    base = w.main()

    plan = w.cli_json("plan", CMD)
    assert plan["files"] == [PROD]
    changed = [ln for ln in plan["diff"].splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert changed == ["-    count: 2", "+    count: 3"]
    assert w.double.api_calls() == []  # plan reads the mirror only: no REST call at all

    run = w.cli_json("run", CMD)
    assert run["diff"] == plan["diff"] and run["files"] == plan["files"]
    number, branch, rid = run["pr"]["number"], run["branch"], run["request"]
    assert (number, rid) == (1, "R1")
    assert run["pr"]["existing"] is False

    # on GitHub: one PR, its branch one commit on main holding exactly the planned diff
    (pull,) = w.double.open_pulls()
    assert (pull.number, pull.head, pull.base) == (number, branch, "main")
    assert pull.labels == ["opsbot", "env:production"]
    head = w.double.branch_sha(branch)
    assert head and w.double.repo.read_commit(head)["parents"] == [base]
    assert w.double.repo.changed_files(base, head) == [PROD]
    assert _hunks(w.double.repo.git("diff", base, head)) == _hunks(plan["diff"])
    message = w.double.repo.read_commit(head)["message"]
    assert "Requested-by: alice" in message and f"Opsbot-Request: {rid}" in message
    assert "```diff" in pull.body and "Requested by alice" in pull.body
    assert TOKEN not in pull.body and WEBHOOK_SECRET not in pull.body

    # the same ask again: the same PR, nothing new on GitHub
    again = w.cli_json("run", CMD)
    assert (again["pr"]["number"], again["pr"]["existing"], again["request"]) == (number, True, rid)
    assert len(w.double.open_pulls()) == 1 and w.opsbot_branches() == [branch]
    assert len(w.double.api_calls("POST", r"/pulls$")) == 1

    opened = w.deliver()
    assert [(d.event, d.status) for d in opened] == [("push", 200), ("push", 200), ("pull_request", 204)]
    assert w.request(rid).state == RequestState.PROPOSED

    merged = w.cli_json("merge", rid)
    assert merged["state"] == "merged"
    merge_sha = w.main()
    assert w.double.repo.read_commit(merge_sha)["parents"] == [base, head]  # a real merge commit
    assert "count: 3" in w.double.show("main", PROD)
    req = w.request(rid)
    assert (req.state, req.merge_sha) == (RequestState.MERGED, merge_sha)

    # GitHub then tells the bot: the request agrees, and is moved once only
    by_event = {d.event: d for d in w.deliver()}
    answer = json.loads(by_event["pull_request"].body)
    assert answer == {"ok": True, "result": "unchanged", "request": rid}
    moves = [t for t in w.store.transitions(rid) if t.to_state == RequestState.MERGED]
    assert len(moves) == 1 and w.request(rid).merge_sha == merge_sha
    assert w.receiver.bot.repo.resolve("main") == merge_sha  # the push refreshed the bot's mirror


def test_a_pr_merged_by_hand_on_github_moves_the_request_to_merged(make_world: Callable[..., World]) -> None:
    w = make_world()
    rid = w.cli_json("run", "scale frontend 5 in production")["request"]
    number = w.request(rid).pr_number
    assert number is not None
    w.deliver()

    merge_sha = w.double.merge_by_hand(number, user="bob")
    assert w.request(rid).state == RequestState.PROPOSED  # nothing moves before GitHub says so

    closed = next(d for d in w.deliver() if d.event == "pull_request")
    assert json.loads(closed.body) == {"ok": True, "result": "merged", "request": rid}
    req = w.request(rid)
    assert (req.state, req.merge_sha) == (RequestState.MERGED, merge_sha)
    last = w.store.transitions(rid)[-1]
    assert (last.to_state, last.actor) == (RequestState.MERGED, "bob")

    # GitHub's "Redeliver": the same delivery id is recognised, nothing moves twice
    again = w.double.redeliver(closed.delivery)
    assert again.status == 200 and json.loads(again.body)["result"] == "duplicate"
    assert len(w.store.transitions(rid)) == 2  # proposed, merged

    # `opsbot prs` on the CLI side sees the same
    rows = json.loads(w.cli("prs", "--state", "merged", "--json").stdout)
    assert [(r["number"], r["request"], r["request_state"], r["merge_sha"]) for r in rows] == [
        (number, rid, "merged", merge_sha)
    ]


def test_a_pr_merged_on_github_without_opsbot_is_announced_in_the_deploy_channel(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    w.double.commit_files("hotfix", {"overlays/production/cache-resources.yaml": "# raised\n"}, author="dave")
    number = w.double.open_by_hand("hotfix", "Hotfix: <!channel> raise cache memory", user="dave")
    sha = w.double.merge_by_hand(number, user="erin")

    closed = next(d for d in w.deliver() if d.event == "pull_request" and b"merged" in d.body)
    assert json.loads(closed.body)["result"] == "merged-elsewhere"
    posts = [i for i in w.store.outbox_due(utcnow()) if i.kind == "channel_post"]
    assert len(posts) == 1
    text = posts[0].payload["text"]
    assert posts[0].payload["channel"] == DEPLOY_CHANNEL
    assert f"PR #{number}" in text and "@dave" in text and "@erin" in text and sha[:7] in text
    assert "raise cache memory" in text and "<!channel>" not in text  # a title cannot ping everyone
    assert w.store.list_requests() == []

    # a second delivery of the same news (new id, e.g. a second hook) announces nothing new
    w.double.send_webhook(
        w.receiver.url, "pull_request", w.running.pull_request_payload(number, "closed"), WEBHOOK_SECRET
    )
    assert len([i for i in w.store.outbox_due(utcnow()) if i.kind == "channel_post"]) == 1


def test_two_requests_on_the_same_file_both_land_with_both_changes(make_world: Callable[..., World]) -> None:
    w = make_world()
    base = w.main()
    first = w.cli_json("run", "scale cache 3 in production")
    second = w.cli_json("run", "scale worker 4 in production")
    assert first["files"] == second["files"] == [PROD]
    assert len(w.double.open_pulls()) == 2

    w.cli_json("merge", first["request"])
    after_first = w.main()
    # the second PR no longer merges textually (both insert at the same place): re-planned, not merged
    merged = w.cli_json("merge", second["request"])
    assert merged["state"] == "merged"
    moved = w.double.api_calls("PATCH", r"/git/refs/heads/")
    assert [c.path.rsplit("/heads/", 1)[1] for c in moved] == [second["branch"]]
    replanned = w.double.branch_sha(second["branch"])
    assert replanned and w.double.repo.read_commit(replanned)["parents"] == [after_first]

    final = w.double.show("main", PROD)
    assert "  - name: cache\n    count: 3\n" in final and "  - name: worker\n    count: 4\n" in final
    added = [
        ln
        for ln in w.double.repo.git("diff", base, "main").splitlines()
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    ]
    assert sorted(added) == sorted(
        ["+  - name: cache", "+    count: 3", "+  - name: worker", "+    count: 4"]
    )
    for r in (first, second):
        assert w.request(r["request"]).state == RequestState.MERGED


def test_branch_protection_requiring_reviews_is_named_and_nothing_is_retried(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    w.double.protect("main", required_approving_review_count=1)
    rid = w.cli_json("run", "scale frontend 5 in production")["request"]
    before = w.main()

    refused = w.cli("merge", rid, ok=False)
    assert refused.returncode == 2  # a refusal
    (line,) = refused.stderr.strip().splitlines()
    assert line == MERGE_REFUSED  # as docs/github.md shows it
    assert len(w.double.api_calls("PUT", r"/merge$")) == 1  # no retry loop
    assert w.main() == before and w.request(rid).state == RequestState.PROPOSED


def test_github_reviews_are_the_approvals_and_the_requester_never_counts(
    make_world: Callable[..., World],
) -> None:
    w = make_world("github")
    w.double.commit_files("main", {".opsbot.yaml": CONFIG_WITH_APPROVALS}, message="Pin opsbot config")
    w.double.protect("main", required_approving_review_count=1)
    run = w.cli_json("run", "scale frontend 5 in production", user="alice")
    rid, number = run["request"], run["pr"]["number"]
    w.deliver()

    early = w.cli("run", f"merge {rid}", "--as", "carol", ok=False)
    assert early.returncode == 2 and "needs 1 approval(s) before it can merge and has 0" in early.stderr
    assert w.double.api_calls("PUT", r"/merge$") == []

    w.double.add_review(number, "alice")  # the requester approving her own change
    (own,) = w.deliver()
    assert json.loads(own.body)["result"] == "unchanged" and w.store.approvals(rid) == []

    w.double.add_review(number, "bob")
    (bobs,) = w.deliver()
    assert json.loads(bobs.body)["result"] == "approval-recorded"
    assert [a.approver for a in w.store.approvals(rid)] == ["bob"]
    assert w.request(rid).state == RequestState.APPROVED
    w.double.redeliver(bobs.delivery)
    w.double.add_review(number, "bob", body="still fine")  # a second review, a new delivery
    w.deliver()
    assert [(a.approver, a.source) for a in w.store.approvals(rid)] == [("bob", "github")]

    merged = w.cli_json("run", f"merge {rid}", user="carol")
    assert merged["state"] == "merged"
    assert len(w.double.repo.read_commit(w.main())["parents"]) == 2


def test_four_eyes_holds_across_chat_and_github_with_the_users_mapping(
    make_world: Callable[..., World],
) -> None:
    """The requester asked in chat (a Slack id); her own review on GitHub, under her login, does not count."""
    w = make_world("github", extra_env={"OPSBOT_USERS": "U0ALICE=alice-gh,U0BOB=bob-gh"})
    w.double.commit_files("main", {".opsbot.yaml": CONFIG_WITH_APPROVALS}, message="Pin opsbot config")
    run = w.cli_json("run", "scale frontend 5 in production", user="U0ALICE")
    rid, number = run["request"], run["pr"]["number"]
    (pull,) = w.double.open_pulls()
    assert "Requested by @alice-gh (U0ALICE)" in pull.body  # GitHub shows, and notifies, whose change it is
    w.deliver()

    w.double.add_review(number, "Alice-GH")  # her own GitHub account (logins ignore case)
    (own,) = w.deliver()
    assert json.loads(own.body)["result"] == "unchanged" and w.store.approvals(rid) == []
    assert w.request(rid).state == RequestState.PROPOSED

    w.double.add_review(number, "bob-gh")
    (bobs,) = w.deliver()
    assert json.loads(bobs.body)["result"] == "approval-recorded"
    assert [a.approver for a in w.store.approvals(rid)] == ["bob-gh"]
    assert w.request(rid).state == RequestState.APPROVED


def test_a_permission_refusal_reaches_the_requester_and_leaves_no_request_open(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    w.double.inject("403", method="POST", path=r"/pulls$")
    failed = w.cli("run", "scale frontend 5 in production", "--json", ok=False)
    assert failed.returncode == 2 and json.loads(failed.stdout)["kind"] == "refused"
    (line,) = failed.stderr.strip().splitlines()
    assert len(w.double.api_calls("POST", r"/pulls$")) == 1  # a 403 without rate limit is not retried

    (req,) = w.store.list_requests()
    assert req.state == RequestState.CLOSED and req.pr_number is None
    assert "PR could not be opened" in w.store.transitions(req.id)[-1].detail
    assert w.double.open_pulls() == []

    # once the token may, the same command opens the PR (the branch left behind is reused)
    again = w.cli_json("run", "scale frontend 5 in production")
    assert again["request"] != req.id and len(w.double.open_pulls()) == 1
    assert w.opsbot_branches() == [again["branch"]]
    assert again["branch"] == "opsbot/scale-frontend-production-8438f4eb"
    assert line == OPEN_REFUSED.format(branch=again["branch"])  # as docs/github.md shows it


def test_opsbot_repo_names_the_mirror_and_a_checkout_is_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    mirror = w.cwd / "mirrors" / "fleet.git"
    run = w.cli_json("run", "scale frontend 5 in production", "--repo", str(mirror))
    assert run["pr"]["number"] == 1
    assert (mirror / "HEAD").read_text().strip() == "ref: refs/heads/main"

    checkout = w.cwd / "fleet-src"  # a working checkout: fetching into it would prune its branches
    refused = w.cli("plan", "scale frontend 4 in production", "--repo", str(checkout), ok=False)
    assert refused.returncode == 2 and "is not an opsbot mirror" in refused.stderr
    assert not (checkout / "HEAD").exists()


def test_a_github_app_installation_opens_and_merges_without_a_token(
    make_world: Callable[..., World], app_keypair: tuple[str, str]
) -> None:
    private, public = app_keypair
    w = make_world(app_public_key=public)
    key = w.cwd / "app.pem"
    key.write_text(private)
    key.chmod(0o600)
    del w.env["GITHUB_TOKEN"]
    w.env.update(
        {
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_APP_PRIVATE_KEY": str(key),
            "GITHUB_APP_INSTALLATION_ID": str(w.double.installation_id),
        }
    )
    run = w.cli_json("run", "scale frontend 5 in production")
    assert run["pr"]["number"] == 1 and len(w.double.issued_tokens) == 1  # REST and git share one token
    merged = w.cli_json("merge", run["request"])
    assert merged["state"] == "merged" and len(w.double.issued_tokens) == 2  # a new process, a new token
    for token in w.double.issued_tokens:
        assert token not in json.dumps(run) + json.dumps(merged)
    assert private.splitlines()[1] not in (w.cwd / "cli-state" / "opsbot.db").read_bytes().decode(
        errors="replace"
    )


# ------------------------------------------------------------------------------------------- faults


@pytest.fixture
def in_process(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`opsbot.cli.main` in this process, its GitHub forge on a fake clock (Retry-After, backoff)."""
    from opsbot import app
    from opsbot.forge.github import GitHubForge

    w = make_world()
    clock = FakeClock()
    for key in [k for k in os.environ if k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))]:
        monkeypatch.delenv(key)
    for key, value in w.env.items():
        if key.startswith(("OPSBOT_", "GITHUB_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPSBOT_USER", "alice")
    made: list[GitHubForge] = []

    def forge(settings: Settings, metrics: Any = None) -> GitHubForge:
        made.append(GitHubForge(settings, clock=clock.time, sleep=clock.sleep, timeout=1, metrics=metrics))
        return made[-1]

    monkeypatch.setattr(app, "make_forge", forge)
    return w, clock


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from opsbot.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


@pytest.mark.parametrize(
    ("kind", "path", "seconds"),
    [
        ("secondary", r"/pulls$", 7.0),  # 403 + Retry-After
        ("primary", r"/git/refs$", 30.0),  # 403 + X-RateLimit-Remaining: 0 + X-RateLimit-Reset
        ("429", r"/git/commits$", 5.0),
        ("502", r"/git/trees$", 0.0),
        ("delay", r"/pulls$", 3.0),  # the PR is made, the answer comes after our 1 s timeout
    ],
)
def test_faults_during_run_are_retried_and_nothing_is_duplicated(
    in_process: Any, capsys: pytest.CaptureFixture[str], kind: str, path: str, seconds: float
) -> None:
    w, clock = in_process
    fault = w.double.inject(kind, method="POST", path=path, seconds=seconds)
    code, out, err = _main(capsys, "run", "scale frontend 5 in production", "--json")
    assert code == 0, err
    assert fault.count == 0  # the fault did happen
    result = json.loads(out)
    assert result["pr"]["number"] == 1

    (pull,) = w.double.open_pulls()
    assert pull.labels == ["opsbot", "env:production"]
    assert w.opsbot_branches() == [result["branch"]] == [pull.head]
    (req,) = w.store.list_requests()
    assert (req.id, req.state, req.pr_number) == (result["request"], RequestState.PROPOSED, 1)
    assert len(w.double.api_calls("POST", path)) == 2  # the failed attempt and one retry
    waited = clock.sleeps[0]
    if kind in ("secondary", "429"):
        assert waited == seconds
    elif kind == "primary":
        assert seconds - 1 <= waited <= seconds + 2  # the reset is a whole second
    else:
        assert waited == 1.0  # first step of the backoff


def test_persistent_5xx_gives_up_after_bounded_retries_and_closes_the_request(
    in_process: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    w, clock = in_process
    w.double.inject("502", count=1000, method="POST", path=r"/pulls$")
    code, out, err = _main(capsys, "run", "scale frontend 5 in production", "--json")
    assert code == 2 and json.loads(out)["kind"] == "refused"  # --json errors are objects too
    assert "The PR could not be opened: GitHub refused opening the pull request" in err
    assert "GitHub answered 502 (5 attempts); try again later." in err
    assert len(w.double.api_calls("POST", r"/pulls$")) == 5
    assert sum(clock.sleeps) <= 120
    (req,) = w.store.list_requests()
    assert req.state == RequestState.CLOSED
    assert w.double.open_pulls() == []


# ------------------------------------------------------------------------------------------- the docs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "github.md"
#: Every `opsbot` command docs/github.md shows, each run by a test above (R1: a fresh store's first).
EXERCISED = {
    f'opsbot plan "{CMD}" --json': "test_run_opens_the_minimal_pr_merge_makes_a_merge_commit_and_the_webhook_agrees",
    f'opsbot run "{CMD}" --json': "test_run_opens_the_minimal_pr_merge_makes_a_merge_commit_and_the_webhook_agrees",
    'opsbot run "scale frontend 5 in production" --repo /var/lib/opsbot/fleet-mirror.git --json': "test_opsbot_repo_names_the_mirror_and_a_checkout_is_refused",
    "opsbot prs --state merged --json": "test_a_pr_merged_by_hand_on_github_moves_the_request_to_merged",
    "opsbot merge R1": "test_branch_protection_requiring_reviews_is_named_and_nothing_is_retried",
    'opsbot run "merge R1" --as carol': "test_github_reviews_are_the_approvals_and_the_requester_never_counts",
}


def _doc_blocks(lang: str) -> list[str]:
    """The fenced code blocks of docs/github.md whose info string is `lang` ("" for none)."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in DOCS.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current = [] if line[3:].strip() == lang else None
                if current is None:
                    current = ["\0"]  # a block of another language: skipped
            else:
                if current[:1] != ["\0"]:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_docs_show_only_commands_and_settings_the_tests_exercise() -> None:
    from opsbot.settings import ENV_VARS

    shown = [ln.strip() for b in _doc_blocks("sh") for ln in b.splitlines() if ln.strip()]
    commands = [ln for ln in shown if ln.startswith("opsbot ")]
    exports = [ln for ln in shown if ln.startswith("export ")]
    assert len(commands) + len(exports) == len(shown)
    assert set(commands) == set(EXERCISED)
    names = {ln.removeprefix("export ").split("=", 1)[0] for ln in exports}
    assert names <= set(ENV_VARS)
    assert "".join(_doc_blocks("")).splitlines() == [
        MERGE_REFUSED,
        OPEN_REFUSED.format(branch="opsbot/scale-frontend-production-8438f4eb"),
    ]
    (config,) = _doc_blocks("yaml")
    assert config == CONFIG_WITH_APPROVALS


def test_the_documented_enterprise_url_and_key_forms_are_understood(app_keypair: tuple[str, str]) -> None:
    from opsbot.forge.github import GitHubForge, _read_private_key

    environ = {"OPSBOT_FORGE": "github", "GITHUB_REPOSITORY": "acme/fleet", "GITHUB_TOKEN": TOKEN}
    forge = GitHubForge(
        load_settings(environ={**environ, "GITHUB_API_URL": "https://github.example.com/api/v3"})
    )
    assert (forge.api_url, forge.git_url) == (
        "https://github.example.com/api/v3",
        "https://github.example.com/acme/fleet.git",
    )
    default = GitHubForge(load_settings(environ=environ))
    assert (default.api_url, default.git_url) == (
        "https://api.github.com",
        "https://github.com/acme/fleet.git",
    )
    private, _ = app_keypair
    assert _read_private_key(private.strip().replace("\n", "\\n")) == private
