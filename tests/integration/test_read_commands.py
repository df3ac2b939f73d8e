"""status, history and help on every layout: read-only, and they say what Git says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.core.model import Actor
from opsbot.core.results import Failure, Info
from opsbot.settings import load_settings
from tests.repos import make_repo

CASES = [
    ("fleet", "frontend", "production", ["production: ghcr.io/acme/frontend:1.4.2 · 3 replicas"]),
    ("fleet", "api", None, ["staging: ghcr.io/acme/api:2.3.0, ghcr.io/acme/envoy:1.29.1 · autoscaled 2-6",
                            "production: ghcr.io/acme/api:2.3.0, ghcr.io/acme/envoy:1.29.1 · autoscaled 3-10"]),
    ("per-app-overlays", "ledger", "production", ["production: ghcr.io/acme/ledger:0.9.4 · 1 replica"]),
    ("helm-values", "podinfo", None, ["dev: 6.5.0 · 1 replica", "production: 6.5.0 · 3 replicas"]),
    ("flux-helmrelease", "podinfo", "production", ["production: chart 6.4.0, image 6.5.0 · 2 replicas"]),
    ("plain", "queue", "staging", ["staging: ghcr.io/acme/queue:0.4.2 · autoscaled 1-3"]),
    ("branch-per-env", "shop", None, ["dev: ghcr.io/acme/shop:2.2.0-rc.1 · 1 replica",
                                      "production: ghcr.io/acme/shop:2.0.3 · 4 replicas"]),
]


def state(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname)"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("fixture", "app", "env", "lines"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_status_history_help(tmp_path: Path, fixture: str, app: str, env: str | None, lines: list[str]) -> None:
    repo = make_repo(fixture, tmp_path / "r")
    before = state(repo)
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    me = Actor("reader")
    try:
        where = f" in {env}" if env else ""
        status = bot.handle(f"status {app}{where}", me)
        assert isinstance(status, Info), status.text()
        for line in lines:
            assert line in status.text()
        overview = bot.handle("status", me)
        assert isinstance(overview, Info) and "app(s)" in overview.text()
        history = bot.handle(f"history {app}{where}", me)
        assert isinstance(history, Info) and history.lines and "No history" not in history.text()
        assert "create cluster <name>" in bot.handle("help", me).text()
        unknown = bot.handle(f"status nosuchapp{where}", me)
        assert isinstance(unknown, Failure) and "Unknown app" in unknown.text()
    finally:
        bot.close()
    assert state(repo) == before
