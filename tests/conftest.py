"""Shared test setup: the doubles' fixture plugins and the sample-repo builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.repos import make_repo

pytest_plugins = [
    "tests.plugins.postgres",
    "tests.plugins.slack",
    "tests.plugins.github",
    "tests.plugins.kube",
]


@pytest.fixture(autouse=True)
def _no_chart_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk only to loopback: a bot built from the environment must not pull public charts."""
    monkeypatch.setenv("OPSBOT_FETCH_CHARTS", "0")


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """The sample fleet (kustomize overlays) as a fresh Git repo with history."""
    return make_repo("fleet", tmp_path / "fleet")
