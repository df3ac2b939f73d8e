"""Request lifecycles as chat transcripts on the console transport (real git, real SQLite)."""

from __future__ import annotations

import io
import subprocess
import threading
from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.chat.console import Console
from opsbot.core.model import Actor, RequestState
from opsbot.core.results import Failure, NoChange, Proposed, RequestUpdate
from opsbot.settings import load_settings


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def bot(fleet: Path) -> Console:
    (fleet / ".opsbot.yaml").write_text(
        "environments:\n"
        "  dev: {path: overlays/dev}\n"
        "  staging: {path: overlays/staging, promote_from: dev}\n"
        "  production: {path: overlays/production, promote_from: staging, approvals: 1}\n"
    )
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "pin config")
    console = Console(Opsbot(load_settings(environ={}, repo=str(fleet))), out=io.StringIO())
    yield console
    console.bot.close()


def test_scale_approve_merge(bot: Console, fleet: Path) -> None:
    r = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(r, Proposed) and r.pr and r.request
    assert r.request.approvals_needed == 1
    own = bot.say(f"approve {r.request.id}", user="alice")
    assert isinstance(own, Failure) and "four-eyes" in own.text()
    early = bot.say(f"merge {r.request.id}", user="alice")
    assert isinstance(early, Failure) and "needs 1 approval(s)" in early.text()
    ok = bot.say(f"approve {r.request.id}", user="bob")
    assert isinstance(ok, RequestUpdate) and ok.request and ok.request.state == RequestState.APPROVED
    twice = bot.say(f"approve {r.request.id}", user="bob")
    assert "already approved" in twice.text()
    merged = bot.say(f"merge {r.request.id}", user="bob")
    assert (
        isinstance(merged, RequestUpdate) and merged.request and merged.request.state == RequestState.MERGED
    )
    again = bot.say(f"merge {r.request.id}", user="bob")
    assert "already merged" in again.text()
    assert len(git(fleet, "log", "--merges", "--format=%H", "main").split()) == 1
    steps = [t.to_state for t in bot.bot.store.transitions(r.request.id)]
    assert steps == [RequestState.PROPOSED, RequestState.APPROVED, RequestState.MERGED]
    assert any("thread R1: ✅ approved by @bob" in line for line in bot.transcript)


def test_same_intent_twice_answers_with_the_open_pr(bot: Console) -> None:
    a = bot.say("deploy frontend 1.6.0 to staging")
    b = bot.say("deploy frontend 1.6.0 to staging", user="carol")
    assert isinstance(a, Proposed) and isinstance(b, Proposed) and a.pr and b.pr
    assert b.existing and b.pr.number == a.pr.number
    assert len(bot.bot.forge.list_prs()) == 1


def test_a_newer_ask_supersedes_the_open_one(bot: Console) -> None:
    a = bot.say("scale frontend 4 in staging")
    b = bot.say("scale frontend 6 in staging")
    assert isinstance(a, Proposed) and isinstance(b, Proposed) and a.request and b.request
    old = bot.bot.store.get_request(a.request.id)
    assert old is not None and old.state == RequestState.SUPERSEDED
    assert bot.bot.forge.get_pr(a.pr.number).state == "closed"  # type: ignore[union-attr]


def test_cancel_closes_the_pr(bot: Console) -> None:
    a = bot.say("scale frontend 4 in staging")
    assert isinstance(a, Proposed) and a.request
    c = bot.say(f"cancel {a.request.id}", user="alice")
    assert isinstance(c, RequestUpdate) and c.request and c.request.state == RequestState.CLOSED
    assert bot.bot.forge.get_pr(a.pr.number).state == "closed"  # type: ignore[union-attr]
    assert isinstance(bot.say(f"merge {a.request.id}", user="bob"), Failure)
    # reopened and merged by hand on the forge later: the request follows the truth
    moved = bot.bot.requests.forge_merged(a.pr.number, "f" * 40, "carol")  # type: ignore[union-attr]
    assert moved is not None and moved.state == RequestState.MERGED and moved.merge_sha == "f" * 40


def test_two_prs_on_the_same_file_both_land(bot: Console, fleet: Path) -> None:
    """The second merge conflicts textually; opsbot re-plans the intent on the new base and merges."""
    a = bot.say("deploy frontend 1.6.0 to staging")
    b = bot.say("deploy cache 7.4.0 to staging")
    assert isinstance(a, Proposed) and isinstance(b, Proposed) and a.request and b.request
    assert isinstance(bot.say(f"merge {a.request.id}", user="bob"), RequestUpdate)
    second = bot.say(f"merge {b.request.id}", user="bob")
    assert isinstance(second, RequestUpdate), second.text()
    text = (fleet / "overlays" / "staging" / "kustomization.yaml").read_text()
    assert "newTag: 1.6.0" in text and "newTag: 7.4.0" in text


def test_concurrent_asks_on_one_app_lose_nothing(bot: Console) -> None:
    results: list[object] = []

    def ask(n: int) -> None:
        results.append(bot.bot.handle(f"scale frontend {n} in dev", _actor(f"u{n}")))

    threads = [threading.Thread(target=ask, args=(n,)) for n in (3, 4, 5, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, Proposed) for r in results), [str(r) for r in results]
    open_reqs = bot.bot.store.list_requests(states=[RequestState.PROPOSED])
    # one open request per distinct intent at most; the identical asks (3 and 3) share one PR
    keys = [r.intent_key for r in open_reqs]
    assert len(keys) == len(set(keys))
    numbers = {r.pr.number for r in results if isinstance(r, Proposed) and r.pr}
    assert len(numbers) == 3


def test_read_commands(bot: Console) -> None:
    s = bot.say("status")
    assert "production: 4 app(s) in overlays/production · approvals 1" in s.text()
    h = bot.say("help")
    assert "scale <app> <replicas> in <env>" in h.text()
    assert "deploy <app> <version> to <env>" in bot.say("help deploy").text()
    hist = bot.say("history frontend in production")
    assert "Release frontend 1.4.2" in hist.text() or "frontend" in hist.text()
    nothing = bot.say("promote api to production")
    assert isinstance(nothing, NoChange) and "already at 2.3.0" in nothing.text()


def _actor(name: str) -> Actor:
    return Actor(name, name, "chat")
