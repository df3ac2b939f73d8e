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


def _push_as(fleet: Path, branch: str, name: str, path: str, old: str, new: str) -> str:
    """Someone commits to the PR branch by hand (the local forge's branch is a plain branch)."""
    git(fleet, "checkout", "-q", branch)
    try:
        file = fleet / path
        file.write_text(file.read_text().replace(old, new, 1))
        subprocess.run(
            ["git", "-C", str(fleet), "-c", f"user.name={name}", "-c", f"user.email={name}@example.com",
             "commit", "-qam", f"{name}'s tweak"],
            check=True, capture_output=True,
        )
        return git(fleet, "rev-parse", "HEAD").strip()
    finally:
        git(fleet, "checkout", "-q", "main")


def test_a_push_after_approval_is_not_merged_until_approved_again(bot: Console, fleet: Path) -> None:
    r = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(r, Proposed) and r.pr and r.request
    rid, main_before = r.request.id, git(fleet, "rev-parse", "main").strip()
    assert bot.say(f"approve {rid}", user="bob").request.state == RequestState.APPROVED  # type: ignore[union-attr]

    pushed = _push_as(fleet, r.pr.branch, "dave", "overlays/production/kustomization.yaml", "count: 5", "count: 50")
    refused = bot.say(f"merge {rid}", user="bob")
    assert isinstance(refused, Failure)
    assert refused.text() == (
        f"{rid} was not merged: PR #{r.pr.number} changed after it was approved ({pushed[:7]} was pushed to its "
        "branch). It needs approval again."
    )
    assert git(fleet, "rev-parse", "main").strip() == main_before  # nothing merged
    assert bot.transcript[-2] == f"  ↳ thread {rid}: • pushed by @dave {pushed[:7]}"
    req = bot.bot.store.get_request(rid)
    assert req is not None and (req.state, req.head_sha) == (RequestState.PROPOSED, pushed)
    assert bot.bot.store.approvals(rid) == []
    again = bot.say(f"merge {rid}", user="bob")
    assert isinstance(again, Failure) and "needs 1 approval(s) before it can merge and has 0" in again.text()

    assert bot.say(f"approve {rid}", user="bob").request.state == RequestState.APPROVED  # type: ignore[union-attr]
    merged = bot.say(f"merge {rid}", user="bob")
    assert isinstance(merged, RequestUpdate) and merged.request and merged.request.state == RequestState.MERGED
    assert git(fleet, "rev-parse", "main^2").strip() == pushed  # exactly the re-approved head merged


def test_an_approval_is_refused_for_a_head_nobody_has_seen(bot: Console, fleet: Path) -> None:
    """On the local forge nobody tells opsbot about a push: approve checks the head first."""
    r = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(r, Proposed) and r.pr and r.request
    pushed = _push_as(fleet, r.pr.branch, "dave", "overlays/production/kustomization.yaml", "count: 5", "count: 50")
    first = bot.say(f"approve {r.request.id}", user="bob")
    assert isinstance(first, Failure) and f"{pushed[:7]} was pushed to its branch" in first.text()
    assert bot.bot.store.approvals(r.request.id) == []
    second = bot.say(f"approve {r.request.id}", user="bob")  # now bob has been told, and approves that head
    assert isinstance(second, RequestUpdate) and second.request and second.request.state == RequestState.APPROVED
    (approval,) = bot.bot.store.approvals(r.request.id)
    assert approval.head_sha == pushed


IMG = "ghcr.io/acme/frontend:"


def _open(bot: Console, command: str) -> tuple[str, int]:
    r = bot.say(command, user="alice")
    assert isinstance(r, Proposed) and r.request and r.pr, r.text()
    return r.request.id, r.pr.number


def _merge(bot: Console, rid: str) -> None:
    assert bot.say(f"approve {rid}", user="bob").request.state == RequestState.APPROVED  # type: ignore[union-attr]
    merged = bot.say(f"merge {rid}", user="bob")
    assert isinstance(merged, RequestUpdate) and merged.request and merged.request.state == RequestState.MERGED, (
        merged.text())


def test_rebase_with_the_same_effect_keeps_the_approval_and_merges(bot: Console, fleet: Path) -> None:
    cache, _ = _open(bot, "scale cache 3 in production")
    worker, worker_pr = _open(bot, "scale worker 4 in production")  # same file, same place: a textual conflict
    assert bot.say(f"approve {worker}", user="carol").request.state == RequestState.APPROVED  # type: ignore[union-attr]
    _merge(bot, cache)

    # opsbot merged #1, so main moved: the worker PR is re-planned on it, same effect, approval stands
    req = bot.bot.store.get_request(worker)
    assert req is not None and req.state == RequestState.APPROVED
    assert req.base_sha == git(fleet, "rev-parse", "main").strip()
    assert bot.transcript[-2].startswith(f"  ↳ thread {worker}: • rebased by @")
    (approval,) = bot.bot.store.approvals(worker)
    assert (approval.approver, approval.head_sha) == ("carol", req.head_sha)
    assert git(fleet, "rev-parse", f"{req.branch}^").strip() == req.base_sha  # one opsbot commit on the new main

    merged = bot.say(f"merge {worker}", user="bob")  # no second approval asked for
    assert isinstance(merged, RequestUpdate) and merged.request and merged.request.state == RequestState.MERGED
    text = (fleet / "overlays" / "production" / "kustomization.yaml").read_text()
    assert "name: cache\n    count: 3" in text and "name: worker\n    count: 4" in text
    assert worker_pr == 2 and bot.bot.forge.get_pr(worker_pr).state == "merged"


def test_rebase_with_another_effect_clears_the_approval_and_says_old_and_new(bot: Console, fleet: Path) -> None:
    deploy, _ = _open(bot, "deploy frontend 1.6.0 to production")
    promote, _ = _open(bot, "promote frontend to production")
    before = bot.bot.store.get_request(promote)
    assert before is not None and [(f["old"], f["new"]) for f in before.fields] == [(IMG + "1.4.2", IMG + "1.5.0")]
    assert bot.say(f"approve {promote}", user="carol").request.state == RequestState.APPROVED  # type: ignore[union-attr]
    _merge(bot, deploy)

    after = bot.bot.store.get_request(promote)
    assert after is not None and after.state == RequestState.PROPOSED
    assert [(f["old"], f["new"]) for f in after.fields] == [(IMG + "1.6.0", IMG + "1.5.0")]
    assert bot.bot.store.approvals(promote) == []
    refused = bot.say(f"merge {promote}", user="bob")
    assert isinstance(refused, Failure) and "needs 1 approval(s) before it can merge and has 0" in refused.text()
    _merge(bot, promote)  # approved again for what it now does, then merged


def test_rebase_closes_a_request_whose_intent_no_longer_applies(bot: Console) -> None:
    deploy, _ = _open(bot, "deploy frontend 1.5.0 to production")
    promote, promote_pr = _open(bot, "promote frontend to production")  # 1.4.2 -> 1.5.0 as well
    _merge(bot, deploy)
    closed = bot.bot.store.get_request(promote)
    assert closed is not None and closed.state == RequestState.CLOSED
    assert "already at 1.5.0" in bot.bot.store.transitions(promote)[-1].detail
    assert bot.bot.forge.get_pr(promote_pr).state == "closed"


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


class _Died(BaseException):
    """The process dying: not an Exception, so nothing on the way catches it."""


def _die_after_opening(bot: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next PR is opened on the forge, then the process dies before recording it."""
    real = bot.bot.store.update_request

    def update_request(request_id: str, **fields: object) -> object:
        if "pr_number" in fields:
            raise _Died()
        return real(request_id, **fields)

    monkeypatch.setattr(bot.bot.store, "update_request", update_request)


def _restarted(fleet: Path) -> Console:
    return Console(Opsbot(load_settings(environ={}, repo=str(fleet))), out=io.StringIO())


def test_a_pr_opened_but_not_recorded_is_recorded_when_asked_again(
    bot: Console, fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _die_after_opening(bot, monkeypatch)
    with pytest.raises(_Died):
        bot.say("scale frontend 5 in production")
    (pr,) = bot.bot.forge.list_prs()
    (lost,) = bot.bot.store.list_requests()
    assert lost.pr_number is None and lost.state == RequestState.PROPOSED
    monkeypatch.undo()

    again = _restarted(fleet)
    try:
        answer = again.say("scale frontend 5 in production", user="carol")
        assert isinstance(answer, Proposed) and answer.existing and answer.pr and answer.request
        assert (answer.request.id, answer.pr.number) == (lost.id, pr.number)
        assert len(again.bot.forge.list_prs()) == 1 and len(again.bot.store.list_requests()) == 1
        assert again.bot.store.get_request(lost.id).pr_number == pr.number  # type: ignore[union-attr]
    finally:
        again.bot.close()


def test_a_pr_opened_but_not_recorded_is_recorded_at_start(
    bot: Console, fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _die_after_opening(bot, monkeypatch)
    with pytest.raises(_Died):
        bot.say("scale frontend 5 in production")
    monkeypatch.undo()
    again = _restarted(fleet)
    try:
        (fixed,) = again.bot.requests.repair()
        (pr,) = again.bot.forge.list_prs()
        assert (fixed.pr_number, fixed.pr_url, fixed.state) == (pr.number, pr.url, RequestState.PROPOSED)
        assert again.bot.requests.repair() == []  # nothing left to do
    finally:
        again.bot.close()


def test_a_request_whose_pr_was_never_opened_is_closed_once_stale(
    bot: Console, fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.bot.forge, "open_pr", lambda *a, **k: (_ for _ in ()).throw(_Died()))
    with pytest.raises(_Died):
        bot.say("scale frontend 5 in production")
    monkeypatch.undo()
    (lost,) = bot.bot.store.list_requests()
    assert bot.bot.requests.repair() == []  # young: another replica may still be opening it
    from opsbot.core import requests as lifecycle

    monkeypatch.setattr(lifecycle, "STALE_OPENING_SECONDS", 0.0)
    monkeypatch.setattr(bot.bot.requests, "pr_wait_seconds", 0.0)
    (closed,) = bot.bot.requests.repair()
    assert closed.id == lost.id and closed.state == RequestState.CLOSED
    again = bot.say("scale frontend 5 in production")  # the intent is free again: one PR, not two
    assert isinstance(again, Proposed) and again.request and again.request.id != lost.id
    assert len(bot.bot.forge.list_prs()) == 1


def test_asking_again_after_the_change_would_differ_updates_the_open_pr(bot: Console, fleet: Path) -> None:
    first = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(first, Proposed) and first.request and first.pr
    rid = first.request.id
    assert bot.say(f"approve {rid}", user="bob").request.state == RequestState.APPROVED  # type: ignore[union-attr]
    # a teammate changes production by hand; nobody tells opsbot (local forge, no periodic check yet)
    prod = fleet / "overlays" / "production" / "kustomization.yaml"
    prod.write_text(prod.read_text().replace("count: 3", "count: 4", 1))
    git(fleet, "commit", "-qam", "frontend to 4 by hand")

    again = bot.say("scale frontend 5 in production", user="carol")
    assert isinstance(again, Proposed) and again.existing and again.request and again.pr
    assert (again.request.id, again.pr.number) == (rid, first.pr.number)  # the same PR, now holding this diff
    assert [(f["old"], f["new"]) for f in again.request.fields] == [("4", "5")]
    branch_file = git(fleet, "show", f"{again.pr.branch}:overlays/production/kustomization.yaml")
    assert branch_file == prod.read_text().replace("count: 4", "count: 5", 1)
    assert again.diff.count("-    count: 4") == 1  # what was printed is what the PR holds
    # the effect changed (3 -> 5 became 4 -> 5): bob's approval no longer stands
    assert bot.bot.store.approvals(rid) == []
    assert bot.bot.store.get_request(rid).state == RequestState.PROPOSED  # type: ignore[union-attr]
    assert any(line.startswith(f"  ↳ thread {rid}: • updated by @") for line in bot.transcript)


def test_the_transitions_a_command_fired_come_back_in_its_result(bot: Console) -> None:
    r = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(r, Proposed) and r.request
    rid = r.request.id
    first, repeat = bot.say(f"approve {rid}", user="bob"), bot.say(f"approve {rid}", user="bob")
    assert isinstance(first, RequestUpdate) and isinstance(repeat, RequestUpdate)
    assert (first.events, repeat.events) == (("approved",), ())  # a second click moved nothing
    merged, again = bot.say(f"merge {rid}", user="bob"), bot.say(f"merge {rid}", user="bob")
    assert (merged.events, again.events) == (("merged",), ())  # type: ignore[attr-defined]
