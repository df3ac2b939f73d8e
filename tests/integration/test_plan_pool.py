"""`opsbot serve` plans in worker processes (issue 12): same plans, same refusals, survives a crash.

The pool talks JSON over pipes to `python -m opsbot.manifests.planpool` children; these tests
compare its answers with the in-process planner's on the same repo.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands import REGISTRY
from opsbot.app import Opsbot
from opsbot.core.model import Actor, CreateCluster, Promote, Rollback
from opsbot.core.results import Failure, Proposed
from opsbot.errors import CommandError
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner, PlanOptions
from opsbot.manifests.planpool import (
    PlanPool,
    PlanWorkerError,
    change_from_json,
    change_to_json,
    intent_from_json,
    intent_to_json,
)
from opsbot.settings import load_settings


def intent(text: str):  # type: ignore[no-untyped-def]
    return REGISTRY.parse(text)[1]


@pytest.fixture
def pool(fleet: Path) -> Iterator[PlanPool]:
    p = PlanPool(str(fleet), 1, kubernetes_version="1.37", max_replicas=50)
    yield p
    p.close()


COMMANDS = [
    "scale frontend 5 in production",
    "scale api 2-8 in staging",
    "deploy api 2.4.0 to production",
    "promote frontend to production",
    "rollback frontend in production",
]


def test_worker_plans_equal_in_process_plans(fleet: Path, pool: PlanPool) -> None:
    repo = GitRepo(str(fleet))
    try:
        for text in COMMANDS:
            local = Planner(repo, "main", PlanOptions("1.37", 50)).plan(intent(text))
            assert pool.plan("main", intent(text)) == local, text
    finally:
        repo.close()


def test_change_survives_the_wire_exactly(fleet: Path) -> None:
    repo = GitRepo(str(fleet))
    try:
        change = Planner(repo, "main").plan(intent("create cluster c9 from small kubernetes_version=1.30"))
    except CommandError:
        change = Planner(repo, "main").plan(intent("deploy api 2.4.0 to production"))
    finally:
        repo.close()
    assert change_from_json(change_to_json(change)) == change
    for sample in (
        CreateCluster("c1", "small", (("region", "eu-1"), ("nodes", "3"))),
        Promote("web", "production"),
        Rollback("web", "dev", None),
    ):
        assert intent_from_json(intent_to_json(sample)) == sample


@pytest.mark.parametrize(
    "text",
    [
        "scale nosuchapp 3 in production",
        "scale frontend 5 in nowhere",
        "scale api 3 in production",
        "scale frontend 3 in production",  # already 3: NothingToDo, an answer
    ],
)
def test_refusals_cross_as_themselves(fleet: Path, pool: PlanPool, text: str) -> None:
    repo = GitRepo(str(fleet))
    try:
        with pytest.raises(CommandError) as local:
            Planner(repo, "main").plan(intent(text))
    finally:
        repo.close()
    with pytest.raises(CommandError) as remote:
        pool.plan("main", intent(text))
    assert type(remote.value) is type(local.value)
    assert remote.value.message == local.value.message


def test_a_dead_worker_is_an_internal_error_and_is_replaced(pool: PlanPool) -> None:
    victim = pool._all[0]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    with pytest.raises(PlanWorkerError):
        pool.plan("main", intent("scale frontend 5 in production"))
    assert pool._all and pool._all[0] is not victim
    assert pool.plan("main", intent("scale frontend 6 in production")).files


def test_bot_with_workers_plans_in_them_and_answers_the_same(fleet: Path, tmp_path: Path) -> None:
    settings = load_settings(environ={}, repo=str(fleet))
    alice = Actor("alice", "alice", "cli")
    threads = Opsbot(settings)
    try:
        expected = threads.handle("scale frontend 5 in production", alice, apply=False)
        refused = threads.handle("scale nosuchapp 5 in production", alice, apply=False)
    finally:
        threads.close()
    bot = Opsbot(settings, plan_workers=1)
    try:
        assert bot.plan_pool is not None
        got = bot.handle("scale frontend 5 in production", alice, apply=False)
        assert isinstance(got, Proposed) and isinstance(expected, Proposed)
        assert got.change == expected.change
        # the plan ran in the worker: this process built no kustomize render
        assert all(not p.index._renders for p in bot._planners.values())
        again = bot.handle("scale nosuchapp 5 in production", alice, apply=False)
        assert isinstance(again, Failure) and isinstance(refused, Failure)
        assert again.message == refused.message
        proposed = bot.handle("scale frontend 5 in production", alice)
        assert isinstance(proposed, Proposed) and proposed.pr is not None
    finally:
        bot.close()
