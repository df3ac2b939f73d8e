"""The fleet index answers exactly what the scan answers, cold and warm, on every layout.

`find` and `other_envs_reading` go through stored rows (issue 12); these tests compare them, for
every app and every file of every env, with the scan they replace (`index_fleet=False` on a repo
with no cache at all), once when the rows are built and once from a later "process" that only
reads them. The warm one must not list the whole tree to do it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from opsbot.errors import CommandError
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index
from tests.repos import make_repo, realworld

FIXTURES: list[Any] = [
    "fleet",
    "per-app-overlays",
    "helm-values",
    "flux-helmrelease",
    "plain",
    "branch-per-env",
]
FIXTURES += [p for p in (realworld("flux2-multi-tenancy"), realworld("gitops-istio")) if p is not None]


def answers(index: Index) -> dict[str, Any]:
    """Every lookup the planner makes, for every app (and an unknown one) and every file, per env."""
    out: dict[str, Any] = {}
    for env in index.config.envs.values():
        try:
            apps = index.apps_in(env)
        except CommandError as exc:
            out[env.name] = f"error: {exc.message}"
            continue
        for app in [*apps, "no-such-app", "podinfo-two"]:
            try:
                t = index.find(app, env.name)
                found: Any = (
                    t.layout,
                    t.root,
                    t.kind,
                    t.name,
                    t.source and (t.source.file, t.source.doc),
                    t.chain,
                )
            except CommandError as exc:
                found = f"error: {exc.message}"
            out[f"{env.name}/{app}"] = found
        for path in [*sorted(index.env_files(env)), "no/such/file.yaml"]:
            out[f"{env.name}:{path}"] = index.other_envs_reading(env, path)
    return out


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f if isinstance(f, str) else f.name)
def test_indexed_lookups_equal_the_scan(fixture: Any, tmp_path: Path) -> None:
    scan_repo = GitRepo(str(make_repo(fixture, tmp_path / "scan")))
    scan = Index(scan_repo, "main", index_fleet=False)
    expected = answers(scan)
    assert scan.fleet() is None  # the reference really scanned
    scan_repo.close()

    path = str(make_repo(fixture, tmp_path / "indexed"))
    cold_repo = GitRepo(path)
    cold = Index(cold_repo, "main")
    assert cold.fleet() is not None
    assert answers(cold) == expected
    cold.persist()
    cold_repo.close()

    warm_repo = GitRepo(path)
    warm = Index(warm_repo, "main")
    assert warm.fleet() is not None and warm._fleet_ready is True  # read, not rebuilt
    some_app = next((k for k, v in expected.items() if "/" in k and isinstance(v, tuple)), None)
    if some_app is not None:
        env_name, app = some_app.split("/", 1)
        warm.find(app, env_name)
        assert warm.snap._blobs is None  # one app's rows, not a listing of the whole tree
    assert answers(warm) == expected
    warm_repo.close()


def test_rows_of_another_commit_are_not_used(tmp_path: Path) -> None:
    """Rows are keyed by commit: after a new commit moves an app, the old rows do not answer."""
    path = make_repo("per-app-overlays", tmp_path / "r")
    repo = GitRepo(str(path))
    before = Index(repo, "main").find("ledger", "production")
    repo.close()
    src = path / before.source.file if before.source else None
    assert src is not None
    moved = src.parent / "moved" / src.name
    moved.parent.mkdir()
    subprocess.run(["git", "-C", str(path), "mv", str(src), str(moved)], check=True)
    kfile = path / Path(before.source.file).parent / "kustomization.yaml"
    kfile.write_text(kfile.read_text().replace(src.name, f"moved/{src.name}"))
    subprocess.run(["git", "-C", str(path), "commit", "-qam", "move"], check=True)
    repo = GitRepo(str(path))
    after = Index(repo, "main").find("ledger", "production")
    scan = Index(repo, "main", index_fleet=False).find("ledger", "production")
    repo.close()
    assert after.source and scan.source
    assert after.source.file == scan.source.file == str(Path(before.source.file).parent / "moved" / src.name)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _sources(index: Index) -> list[tuple[str, str, str]]:
    """(env, app, source file) of every workload defined in a plain or kustomize file."""
    out = []
    for env in index.config.envs.values():
        for app in index.apps_in(env):
            try:
                t = index.find(app, env.name)
            except CommandError:
                continue
            if t.source and t.layout != "helm":
                out.append((env.name, app, t.source.file))
    return out


NEW_APP = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: newcomer
spec:
  selector: {matchLabels: {app: newcomer}}
  template:
    metadata: {labels: {app: newcomer}}
    spec:
      containers: [{name: newcomer, image: "ghcr.io/acme/newcomer:1.0.0"}]
"""


def _rename_and_add(repo: Path, index: Index) -> None:
    """Rename one workload (its metadata.name) and add a new one beside another, then commit."""
    sources = _sources(index)
    assert sources, "fixture has no workload files"
    _, app, file = sources[0]
    path = repo / file
    path.write_text(path.read_text().replace(f"name: {app}\n", f"name: {app}-renamed\n", 1))
    _, _, other = sources[-1]
    folder = (repo / other).parent
    (folder / "newcomer.yaml").write_text(NEW_APP)
    kfile = folder / "kustomization.yaml"
    if kfile.exists():
        text = kfile.read_text()
        kfile.write_text(text.replace("resources:\n", "resources:\n- newcomer.yaml\n", 1))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "rename one app, add another")


def _rename_chart(repo: Path, index: Index) -> None:
    chart = repo / "charts" / "podinfo" / "Chart.yaml"
    chart.write_text(chart.read_text().replace("name: podinfo", "name: podinfo-two"))
    _git(repo, "commit", "-qam", "rename the chart")


UPDATES = [
    ("fleet", _rename_and_add),
    ("per-app-overlays", _rename_and_add),
    ("plain", _rename_and_add),
    ("flux-helmrelease", _rename_and_add),
    ("helm-values", _rename_chart),
]


@pytest.mark.parametrize(("fixture", "mutate"), UPDATES, ids=[f for f, _ in UPDATES])
def test_update_from_the_previous_commit_equals_the_scan(fixture: str, mutate: Any, tmp_path: Path) -> None:
    path = make_repo(fixture, tmp_path / "r")
    repo = GitRepo(str(path))
    first = Index(repo, "main")
    assert first.fleet() is not None and first.fleet_source == "full"
    before = answers(first)
    mutate(path, first)
    repo.close()

    repo = GitRepo(str(path))
    updated = Index(repo, "main")
    assert updated.snap.sha != first.snap.sha
    assert updated.fleet() is not None and updated.fleet_source == "update"
    got = answers(updated)
    repo.close()

    scan_repo = GitRepo(str(make_repo(path, tmp_path / "scan", history=False)))
    expected = answers(Index(scan_repo, "main", index_fleet=False))
    scan_repo.close()
    assert got == expected
    assert got != before  # the change did change answers

    warm_repo = GitRepo(str(path))  # and the updated rows, read back by a later process
    warm = Index(warm_repo, "main")
    assert warm.fleet_source == "stored"
    assert answers(warm) == expected
    warm_repo.close()


def test_a_large_change_indexes_afresh(tmp_path: Path) -> None:
    path = make_repo("per-app-overlays", tmp_path / "r")
    repo = GitRepo(str(path))
    assert Index(repo, "main").fleet() is not None
    repo.close()
    for i in range(Index.MAX_UPDATE_PATHS + 1):
        (path / "docs" / f"{i}.md").parent.mkdir(exist_ok=True)
        (path / "docs" / f"{i}.md").write_text(f"{i}\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "many files")
    repo = GitRepo(str(path))
    index = Index(repo, "main")
    assert index.fleet() is not None and index.fleet_source == "full"
    repo.close()


def test_rows_pruned_under_a_live_index_are_not_read_as_absent(tmp_path: Path) -> None:
    """A running bot keeps an Index per commit; if the cache drops that commit's rows meanwhile
    (pruning keeps the most recently used eight), lookups scan instead of answering "unknown"."""
    path = make_repo("per-app-overlays", tmp_path / "r")
    repo = GitRepo(str(path))
    index = Index(repo, "main")
    assert index.fleet() is not None
    expected = answers(index)
    conn = repo.db._connection()
    assert conn is not None
    conn.execute("DELETE FROM facts")
    conn.execute("DELETE FROM commits")
    assert answers(index) == expected
    repo.close()
