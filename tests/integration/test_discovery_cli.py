"""What people see of discovery: `opsbot check` (chain, shared paths, aliases), `opsbot init` when
discovery cannot decide, `history` of an unknown app, and promote across two layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.cli import main
from opsbot.core.model import Actor
from opsbot.core.results import Failure, Info
from opsbot.errors import CommandError
from opsbot.manifests.gitrepo import GitRepo
from opsbot.settings import load_settings
from tests.engine import plan
from tests.repos import commit_files, make_repo

FLUX_KS = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: infrastructure
  namespace: flux-system
spec:
  interval: 1h
  path: ./infrastructure
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""


def check(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", "--repo", str(repo)])
    return code, capsys.readouterr().out


def test_check_reports_shared_flux_infrastructure_as_shared_not_as_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both clusters apply ./infrastructure (the flux2-kustomize-helm-example layout)."""
    repo = make_repo("flux-helmrelease", tmp_path / "r", history=False)
    commit_files(
        repo,
        "Add infrastructure shared by both clusters",
        {
            "infrastructure/kustomization.yaml": "resources:\n  - namespace.yaml\n",
            "infrastructure/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ingress\n",
            "clusters/staging/infrastructure.yaml": FLUX_KS,
            "clusters/production/infrastructure.yaml": FLUX_KS,
        },
    )
    code, out = check(repo, capsys)
    assert "ℹ️ infrastructure is shared by staging, production; opsbot changes it for no single env." in out
    assert code == 0, out
    assert out.rstrip().endswith("ok")


def test_check_fails_when_an_env_has_nothing_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo("testing-chain", tmp_path / "r", history=False)
    commit_files(
        repo,
        "Pin config",
        {".opsbot.yaml": "environments:\n  qa:\n    path: overlays/qa\n  uat:\n    path: overlays/qa\n"},
    )
    code, out = check(repo, capsys)
    assert code == 1
    assert "❌ every path of qa is shared with another env; opsbot cannot change qa alone." in out


def test_check_shows_the_promotion_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo("testing-chain", tmp_path / "r", history=False)
    code, out = check(repo, capsys)
    assert code == 0, out
    assert "promotion: testing → qa → uat → production" in out


def test_aliases_are_not_counted_as_apps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo("fleet", tmp_path / "r", history=False)
    commit_files(repo, "Alias web", {".opsbot.yaml": "apps:\n  web:\n    workload: frontend\n"})
    code, out = check(repo, capsys)
    assert code == 0, out
    assert "  apps: api, cache, frontend, worker\n  aliases: web → frontend" in out, out
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    try:
        status = bot.handle("status in production", Actor("reader"))
        assert isinstance(status, Info) and "production: 4 app(s)" in status.text()
        assert isinstance(bot.handle("status web in production", Actor("reader")), Info)
    finally:
        bot.close()


def test_history_of_an_unknown_app_says_unknown_app(tmp_path: Path) -> None:
    repo = make_repo("fleet", tmp_path / "r", history=False)
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    try:
        nope = bot.handle("history frontnd", Actor("reader"))
        assert isinstance(nope, Failure) and not nope.reference
        assert nope.text() == 'Unknown app "frontnd". Did you mean "frontend"? Apps: api, cache, frontend, worker.'
        in_env = bot.handle("history nope in staging", Actor("reader"))
        assert isinstance(in_env, Failure) and in_env.text().startswith('Unknown app "nope" in staging.')
        status = bot.handle("status frontnd", Actor("reader"))
        assert isinstance(status, Failure) and status.text() == nope.text()
    finally:
        bot.close()


def test_init_writes_a_commented_skeleton_when_discovery_cannot_decide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo("late-config", tmp_path / "r", history=False)
    assert main(["init", "--repo", str(repo)]) == 0
    captured = capsys.readouterr()
    text = (repo / ".opsbot.yaml").read_text()
    assert all(line.startswith("#") for line in text.splitlines())
    assert "#   - deploy/blue\n" in text and "No environments found" in text
    assert "commented skeleton" in captured.err


def test_promote_across_two_layouts_says_what_to_do(tmp_path: Path) -> None:
    """uat uses kustomize, production a Helm values file: no copy, but the exact command to run."""
    repo = make_repo("testing-chain", tmp_path / "r", history=False)
    commit_files(
        repo,
        "Production moves to the Helm chart",
        {
            "charts/api/Chart.yaml": "apiVersion: v2\nname: api\nversion: 1.0.0\n",
            "charts/api/values.yaml": "replicaCount: 1\nimage:\n  tag: 3.2.0\n",
            "charts/api/values-production.yaml": "replicaCount: 2\n",
            # a chart that reads the key, so the render proof can see the tag change
            "charts/api/templates/deployment.yaml": (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n"
                "  replicas: {{ .Values.replicaCount }}\n  selector:\n    matchLabels: {app: api}\n"
                "  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n"
                "        - name: api\n          image: \"ghcr.io/example/api:{{ .Values.image.tag }}\"\n"
            ),
            ".opsbot.yaml": (
                "environments:\n  uat:\n    path: overlays/uat\n"
                "  production:\n    path: charts/api/values-production.yaml\n"
            ),
        },
    )
    with pytest.raises(CommandError) as err:
        plan(GitRepo(str(repo)), "promote api to production")
    assert err.value.message == (
        "api is deployed with kustomize in uat and with a Helm values file in production, so opsbot cannot "
        "copy one onto the other. uat runs image tag 3.3.0: say `deploy api 3.3.0 to production` to run it there."
    )
    change = plan(GitRepo(str(repo)), "deploy api 3.3.0 to production")
    assert [(f.old, f.new) for f in change.fields] == [("3.2.0", "3.3.0")]


@pytest.mark.realworld
def test_check_on_flux2_multi_tenancy_reports_shared_infrastructure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.needs import missing
    from tests.repos import realworld

    src = realworld("flux2-multi-tenancy")
    if src is None:
        missing("../shared/fixtures/realworld/flux2-multi-tenancy not present beside this checkout")
    repo = make_repo(src, tmp_path / "fmt")
    code, out = check(repo, capsys)
    assert code == 0, out
    assert "ℹ️ infrastructure/kyverno is shared by staging, production" in out
    assert "promotion: staging → production" in out and "cycle" not in out


def test_check_reports_a_configured_path_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo("testing-chain", tmp_path / "r", history=False)
    commit_files(
        repo,
        "Pin config with a typo",
        {".opsbot.yaml": "environments:\n  qa:\n    path: overlays/qa\n  uat:\n    path: overlay/uat\n"},
    )
    code, out = check(repo, capsys)
    assert code == 1
    assert "  ❌ overlay/uat: .opsbot.yaml: path overlay/uat does not exist in the repo." in out


def test_check_names_the_chart_of_each_values_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo("argo-helm-values", tmp_path / "r", history=False)
    code, out = check(repo, capsys)
    assert code == 0, out
    assert "  ✅ values-staging.yaml: Helm values of chart guestbook (charts/guestbook)" in out
    assert "promotion: dev → staging → prod" in out
