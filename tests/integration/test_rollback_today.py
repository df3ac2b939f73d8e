"""`rollback` reads history with today's config and layout, not with what an old commit said."""

from __future__ import annotations

from pathlib import Path

from opsbot.manifests.gitrepo import GitRepo
from tests.engine import plan
from tests.repos import commit_files, make_repo

SHOP = "deploy/blue/shop.yaml"


def _bump(path: Path, old: str, new: str) -> str:
    text = (path / SHOP).read_text()
    assert text.count(old) == 1
    return text.replace(old, new)


def test_rollback_to_a_version_older_than_the_config(tmp_path: Path) -> None:
    """The first commit has no `.opsbot.yaml` and nothing discovery knows: it must not be loaded."""
    path = make_repo("late-config", tmp_path / "r")
    commit_files(
        path,
        "Pin opsbot config and release shop 1.1.0",
        {
            ".opsbot.yaml": "environments:\n  production:\n    path: deploy/blue\n",
            SHOP: _bump(path, "shop:1.0.0", "shop:1.1.0"),
        },
    )
    change = plan(GitRepo(str(path)), "rollback shop in production")
    assert [(f.field, f.old, f.new) for f in change.fields] == [
        ("image shop", "ghcr.io/acme/shop:1.1.0", "ghcr.io/acme/shop:1.0.0")
    ]
    assert change.files == ["deploy/blue/kustomization.yaml"] and change.ok


def test_rollback_uses_todays_env_names(tmp_path: Path) -> None:
    """The env was called `prd` back then; today it is `production` and its history still counts."""
    path = make_repo("late-config", tmp_path / "r")
    commit_files(
        path,
        "Pin opsbot config (prd) and release shop 1.1.0",
        {
            ".opsbot.yaml": "environments:\n  prd:\n    path: deploy/blue\n",
            SHOP: _bump(path, "shop:1.0.0", "shop:1.1.0"),
        },
    )
    commit_files(
        path,
        "Rename prd to production and release shop 1.2.0",
        {
            ".opsbot.yaml": "environments:\n  production:\n    path: deploy/blue\n",
            SHOP: _bump(path, "shop:1.1.0", "shop:1.2.0"),
        },
    )
    change = plan(GitRepo(str(path)), "rollback shop in production")
    assert [(f.old, f.new) for f in change.fields] == [("ghcr.io/acme/shop:1.2.0", "ghcr.io/acme/shop:1.1.0")]
    assert change.ok
