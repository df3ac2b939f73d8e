"""Acceptance: no command of the grammar crashes on any fixture repo.

Every verb (scale, scale bounds, promote, deploy, rollback, create cluster, status, history, help),
with good and bad words, on every env of every fixture (ours and copies of the public repos in
../shared/fixtures/realworld) must answer with a result or a clean refusal: never "Something went
wrong" (an internal error). Plans only (apply=False): what is under test is the engine's answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.core.model import Actor
from opsbot.core.results import Failure, Result
from opsbot.errors import OpsbotError
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index
from opsbot.settings import load_settings
from tests.needs import missing
from tests.repos import FIXTURES, make_repo, realworld

REALWORLD = ("gitops-istio", "flux2-multi-tenancy")


def commands_for(index: Index | None) -> list[str]:
    """The grammar, once per env with the first app of that env, plus bad words of every kind."""
    out = [
        "help",
        "status",
        "history nope",
        "status nope",
        "scale nope 2 in nowhere",
        "deploy",
        "scale",
        "promote",
        "rollback nope",
        "create cluster test-1",
        "create cluster Bad_Name",
        "create cluster edge-2 template nosuch",
    ]
    if index is None:
        return out
    for env in index.config.envs.values():
        try:
            apps = index.apps_in(env)
        except OpsbotError:
            apps = []
        for app in apps[:1] or ["nope"]:
            e = env.name
            out += [
                f"status {app}",
                f"status {app} in {e}",
                f"history {app}",
                f"history {app} in {e}",
                f"scale {app} 2 in {e}",
                f"scale {app} 0 in {e}",
                f"scale {app} 2-5 in {e}",
                f"scale {app} 5-2 in {e}",
                f"scale {app} 100000 in {e}",
                f"deploy {app} 9.9.9 to {e}",
                f"deploy {app} not/a:tag to {e}",
                f"promote {app} to {e}",
                f"promote {app} from {e} to {e}",
                f"rollback {app} in {e}",
                f"rollback {app} in {e} to 1.0.0",
                f"scale {app} 2 in {e}x",
            ]
    return out


def run_all(repo: Path) -> list[str]:
    try:
        index: Index | None = Index(GitRepo(str(repo)), "main")
    except OpsbotError:
        index = None  # nothing discovered and nothing configured: every command must still refuse cleanly
    crashed: list[str] = []
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    try:
        for command in commands_for(index):
            result: Result = bot.handle(command, Actor("alice"), apply=False)
            if isinstance(result, Failure) and (result.reference or not result.text()):
                crashed.append(command)
    finally:
        bot.close()
    return crashed


@pytest.mark.parametrize("fixture", FIXTURES)
def test_no_command_crashes_on_our_fixtures(tmp_path: Path, fixture: str) -> None:
    repo = make_repo(fixture, tmp_path / "r")
    crashed = run_all(repo)
    assert not crashed, f"internal errors on: {crashed}"


@pytest.mark.realworld
@pytest.mark.parametrize("name", REALWORLD)
def test_no_command_crashes_on_public_repos(tmp_path: Path, name: str) -> None:
    src = realworld(name)
    if src is None:
        missing(f"../shared/fixtures/realworld/{name} not present beside this checkout")
    repo = make_repo(src, tmp_path / name)
    crashed = run_all(repo)
    assert not crashed, f"internal errors on: {crashed}"
