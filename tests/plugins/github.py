"""Fixtures for the GitHub double and the GitHub forge (register with `-p tests.plugins.github`).

Why a plugin: the forge tests, the double's own tests and later end-to-end tests all need the
same running double and a forge pointed at it, with a fake clock so retries never really wait.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from opsbot.core.model import Change, FieldChange, FileEdit, Scale
from opsbot.settings import Secret, Settings
from tests.doubles.github import GitHubDouble, RunningDouble, make_app_keypair, serve_in_thread
from tests.doubles.serving import ServedApp, serve_app_in_thread

T = TypeVar("T")

TOKEN = "ghp_double_token"
SEED_FILES = {
    "apps/web/production/kustomization.yaml": (
        "resources:\n  - ../base\nreplicas:\n  - name: web\n    count: 2\n"
    ),
    "apps/web/base/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
    "README.md": "# fleet\n",
}


@dataclass
class FakeClock:
    """Wall time plus an offset that `sleep` advances: retries and token expiry without waiting."""

    offset: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def github_double(tmp_path: Path) -> GitHubDouble:
    double = GitHubDouble(tmp_path / "github", token=TOKEN)
    double.commit_files("main", SEED_FILES, message="seed")
    return double


@pytest.fixture
def github_server(github_double: GitHubDouble) -> Iterator[RunningDouble]:
    with serve_in_thread(github_double) as running:
        yield running


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github_settings(github_server: RunningDouble, tmp_path: Path) -> Settings:
    return Settings(
        forge="github",
        state_dir=str(tmp_path / "state"),
        github_api_url=github_server.api_url,
        github_repository=github_server.double.full_name,
        github_token=Secret(TOKEN),
        mirror_max_age_seconds=60,
    )


@pytest.fixture
def make_forge(github_settings: Settings, fake_clock: FakeClock) -> Any:
    from opsbot.forge.github import GitHubForge

    def make(settings: Settings | None = None, **kwargs: Any) -> GitHubForge:
        kwargs.setdefault("clock", fake_clock.time)
        kwargs.setdefault("sleep", fake_clock.sleep)
        return GitHubForge(settings or github_settings, **kwargs)

    return make


@pytest.fixture
def github_forge(make_forge: Any) -> Any:
    return make_forge()


@pytest.fixture(scope="session")
def app_keypair() -> tuple[str, str]:
    return make_app_keypair()


def make_change(
    base_sha: str,
    files: dict[str, str],
    *,
    before: dict[str, str | None] | None = None,
    base_branch: str = "main",
    title: str = "Scale web to 3 replicas in production",
    replicas: int = 3,
) -> Change:
    """A Change as the planner would hand it to a forge (only the fields the forge reads matter)."""
    before = before or {}
    return Change(
        intent=Scale(app="web", env="production", replicas=replicas),
        base_branch=base_branch,
        base_sha=base_sha,
        edits=tuple(FileEdit(path, before.get(path), text) for path, text in files.items()),
        fields=(FieldChange("web", "production", "replicas", "2", str(replicas), next(iter(files))),),
        title=title,
    )


# ------------------------------------------------------------------------------------- end-to-end

WEBHOOK_SECRET = "whsec_double_webhook_secret"


def push_repo(double: GitHubDouble, src: Path) -> None:
    """Put a local repo's branches behind the double, as `git push --all` to GitHub would."""
    subprocess.run(
        ["git", "-C", str(src), "push", "-q", str(double.repo.path), "refs/heads/*:refs/heads/*"],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def fleet_double(tmp_path: Path) -> GitHubDouble:
    """The sample fleet (`make_repo("fleet")`, with its history) as acme/fleet on the double."""
    from tests.repos import make_repo

    double = GitHubDouble(tmp_path / "github-fleet", token=TOKEN)
    push_repo(double, make_repo("fleet", tmp_path / "fleet-src"))
    return double


@pytest.fixture
def fleet_server(fleet_double: GitHubDouble) -> Iterator[RunningDouble]:
    with serve_in_thread(fleet_double) as running:
        yield running


@dataclass
class Receiver:
    """A bot whose `POST /webhooks/github` is served on 127.0.0.1; `url` is the hook URL."""

    bot: Any
    hooks: Any
    served: ServedApp

    @property
    def url(self) -> str:
        return self.served.url + "/webhooks/github"

    def idle(self) -> None:
        """Wait until the background mirror refreshes the deliveries asked for are done."""
        self.served.run(self.hooks.refresher.idle())


@contextlib.contextmanager
def webhook_receiver(settings: Settings) -> Iterator[Receiver]:
    """The real `Opsbot` with the GitHub webhook routes mounted on an aiohttp app, in a thread."""
    from opsbot.app import Opsbot
    from opsbot.intake.github_routes import GitHubWebhooks

    bot = Opsbot(settings)
    hooks = GitHubWebhooks(bot, settings)
    app = web.Application()
    app.add_routes(hooks.routes())
    try:
        with serve_app_in_thread(app) as served:
            yield Receiver(bot, hooks, served)
    finally:
        bot.close()
