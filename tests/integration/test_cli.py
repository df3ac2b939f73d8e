"""The CLI contract (DESIGN §3) through a real process: plan, run, prs, merge, init, check, testdrive.
Bad input of every kind exits non-zero with one line on stderr and leaves the repo untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.repos import make_repo


def opsbot(*args: str, cwd: Path | None = None, user: str = "alice") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}
    env["OPSBOT_USER"] = user
    return subprocess.run(
        [sys.executable, "-m", "opsbot", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def snapshot(repo: Path) -> tuple[str, str, str]:
    """Branches, HEAD and work-tree state: what 'untouched' means."""
    return (
        git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain"),
    )


def test_plan_json_contract_and_touches_nothing(fleet: Path) -> None:
    before = snapshot(fleet)
    p = opsbot("plan", "scale frontend 5 in production", "--repo", str(fleet), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["intent"] == {"verb": "scale", "app": "frontend", "env": "production", "replicas": 5}
    assert out["files"] == ["overlays/production/kustomization.yaml"]
    assert "-    count: 3\n+    count: 5\n" in out["diff"]
    assert out["summary"] == "Scale frontend to 5 replicas in production"
    assert all(c["ok"] for c in out["checks"]) and len(out["checks"]) == 3
    assert snapshot(fleet) == before


def test_run_opens_a_pr_branch_with_one_commit_then_merge(fleet: Path) -> None:
    p = opsbot("run", "deploy api 2.4.0 to production", "--repo", str(fleet), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    branch = out["branch"]
    assert branch.startswith("opsbot/deploy-api-production-")
    assert out["pr"]["number"] == 1 and out["request"] == "R1"
    assert git(fleet, "rev-list", "--count", f"main..{branch}").strip() == "1"
    msg = git(fleet, "log", "-1", "--format=%B", branch)
    assert "Requested-by: alice" in msg and "Opsbot-Request: R1" in msg
    assert git(fleet, "diff", "--name-only", "main", branch).split() == sorted(out["files"])
    assert git(fleet, "status", "--porcelain") == ""

    # the same intent again answers with the open PR
    again = json.loads(opsbot("run", "deploy api 2.4.0 to production", "--repo", str(fleet), "--json").stdout)
    assert again["pr"] == {"number": 1, "url": out["pr"]["url"], "existing": True}
    prs = json.loads(opsbot("prs", "--repo", str(fleet), "--json").stdout)
    assert [p["number"] for p in prs] == [1]

    m = opsbot("merge", "R1", "--repo", str(fleet), user="bob")
    assert m.returncode == 0, m.stderr
    parents = git(fleet, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == 2 and git(fleet, "rev-parse", branch).strip() in parents
    assert "image: ghcr.io/acme/api:2.4.0" in (fleet / "overlays/production/api-image-patch.yaml").read_text()
    merged = json.loads(opsbot("prs", "--repo", str(fleet), "--state", "merged", "--json").stdout)
    assert merged[0]["request_state"] == "merged"


def test_no_change_is_an_answer_not_a_pr(fleet: Path) -> None:
    p = opsbot("run", "scale frontend 3 in production", "--repo", str(fleet))
    assert p.returncode == 0
    assert "already runs 3 replicas" in p.stdout
    assert "opsbot/" not in git(fleet, "branch", "--list")


BAD = [
    ("scale fronted 5 in production", 'Unknown app "fronted" in production. Did you mean "frontend"?'),
    ("scale frontend 5 in prodution", 'Unknown environment "prodution". Did you mean "production"?'),
    ("scale frontend -1 in production", "0 or more"),
    ("scale frontend 500 in production", "above the maximum of 50"),
    ("scale frontend yes in production", 'whole number, not "yes"'),
    ("scale api 4 in production", "HorizontalPodAutoscaler api"),
    ("deploy frontend 1.2:3 to production", "not a valid image tag"),
    ("deploy frontend ../../etc to production", "not a valid image tag"),
    ("create cluster Edge_3", "DNS-1123"),
    ("create cluster edge-3 worker_machine_count=yes", "boolean"),
    ("promote frontend from production to production", "two different environments"),
    ("rollback worker in production", "No earlier version"),
    ("scale frontend\x1b[2J 5 in production", "control or invisible character (U+001B)"),
    ("scale frontend 5 in \u202eproduction", "control or invisible character (U+202E)"),
]


@pytest.mark.parametrize(("command", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_non_zero_and_leaves_the_repo_untouched(
    fleet: Path, command: str, message: str
) -> None:
    before = snapshot(fleet)
    p = opsbot("run", command, "--repo", str(fleet))
    assert p.returncode == 2  # a refusal (an internal error would be 3)
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert p.stdout == ""
    j = opsbot("run", command, "--repo", str(fleet), "--json")
    assert j.returncode == 2 and len(j.stderr.strip().splitlines()) == 1
    out = json.loads(j.stdout)
    assert out["kind"] == "refused" and message in out["error"]
    assert snapshot(fleet) == before


def test_a_change_that_breaks_the_build_opens_no_pr(tmp_path: Path) -> None:
    """A JSON6902 `test` op guards replicas; editing the patch makes kustomize fail: the gate says why."""
    repo = make_repo("fleet", tmp_path / "r", history=False)
    overlay = repo / "overlays" / "dev"
    (overlay / "worker-replicas.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\nspec:\n  replicas: 1\n"
    )
    (overlay / "guard.yaml").write_text("- op: test\n  path: /spec/replicas\n  value: 1\n")
    kust = overlay / "kustomization.yaml"
    text = kust.read_text().replace("replicas:\n  - name: worker\n    count: 1\n", "")
    text += (
        "patches:\n  - path: worker-replicas.yaml\n  - path: guard.yaml\n"
        "    target:\n      kind: Deployment\n      name: worker\n"
    )
    kust.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "guard worker replicas")
    before = snapshot(repo)
    p = opsbot("run", "scale worker 2 in dev", "--repo", str(repo))
    assert p.returncode != 0
    assert "failed validation, so no PR was opened" in p.stderr and "kustomize build" in p.stderr
    assert snapshot(repo) == before


def test_init_writes_the_discovered_config_and_check_lints(fleet: Path) -> None:
    p = opsbot("init", "--repo", str(fleet))
    assert p.returncode == 0, p.stderr
    text = (fleet / ".opsbot.yaml").read_text()
    assert "production:\n    path: overlays/production\n    promote_from: staging\n    approvals: 1" in text
    assert opsbot("init", "--repo", str(fleet)).returncode == 1  # refuses to overwrite
    c = opsbot("check", "--repo", str(fleet))
    assert c.returncode == 0, c.stdout
    assert "✅ overlays/production: kustomize build" in c.stdout
    assert "apps: api, cache, frontend, worker" in c.stdout


def test_check_reports_a_broken_env(fleet: Path) -> None:
    (fleet / "overlays" / "staging" / "kustomization.yaml").write_text(
        "resources:\n  - ../../apps/nothing-here\n"
    )
    git(fleet, "commit", "-qam", "break staging")
    c = opsbot("check", "--repo", str(fleet))
    assert c.returncode == 1
    assert "❌ overlays/staging" in c.stdout


def test_ambiguous_discovery_names_candidates_and_how_to_pin(tmp_path: Path) -> None:
    repo = make_repo("flux-helmrelease", tmp_path / "r", history=False)
    (repo / "clusters" / "staging" / "apps.yaml").write_text(
        (repo / "clusters" / "staging" / "apps.yaml")
        .read_text()
        .replace("./apps/staging", "./apps/production")
    )
    git(repo, "commit", "-qam", "point staging cluster at the production apps")
    p = opsbot("plan", "scale podinfo 2 in staging", "--repo", str(repo))
    assert p.returncode != 0
    assert "ambiguous" in p.stderr and "Pin it in .opsbot.yaml" in p.stderr


def test_testdrive_runs_the_whole_flow_with_no_credentials(tmp_path: Path) -> None:
    p = opsbot("testdrive", "--dir", str(tmp_path / "td"), "--no-input")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "PR #1 opened · request R1 · needs 1 approval [Review PR]" in out
    assert "four-eyes" in out
    assert "Merged by @bob as " in out
    assert "production: ghcr.io/acme/frontend:1.4.2 · 5 replicas" in out
    assert git(tmp_path / "td", "log", "-1", "--format=%s").startswith("Scale frontend to 5 replicas")
    # the loop closes: a signed Flux event through the real route, then the thread and the channel
    sha = git(tmp_path / "td", "rev-parse", "--short=7", "main").strip()
    assert f"flux> POST /webhooks/flux (Kustomization flux-system/apps applied {sha}, signed) → HTTP 202" in out
    assert f"  ↳ thread R1: 🚀 Live in production — Flux kustomization apps applied {sha}" in out
    # the deploy is told once in the thread, as in Slack (not also as a bare transition line)
    (told,) = [line for line in out.splitlines() if line.startswith("  ↳ thread R1: 🚀")]
    assert told.startswith(f"  ↳ thread R1: 🚀 Live in production — Flux kustomization apps applied {sha}, ")
    assert "#deploys: 🚀 production · frontend replicas 3 → 5 · PR #1 (" in out
    assert "<" not in out.split("flux> ", 1)[1]  # no Slack markup on the terminal


def test_testdrive_reads_commands_from_piped_stdin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSBOT_", "GITHUB_", "SLACK_"))}
    p = subprocess.run([sys.executable, "-m", "opsbot", "testdrive", "--dir", str(tmp_path / "td")],
                       input="status api\n/as bob\nscale worker 1 in dev\n", capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "@alice> /ops status api" in p.stdout and "production: ghcr.io/acme/api:2.3.0" in p.stdout
    assert "@bob> /ops scale worker 1 in dev" in p.stdout and "worker already runs 1 replica in dev" in p.stdout


def test_testdrive_dir_never_reaches_a_shell(tmp_path: Path) -> None:
    """Issue 9 item 9: `--dir` went through os.system inside single quotes; a quote in it ran commands."""
    dest = tmp_path / "td'; touch pwned; echo '$(touch pwned2)"
    p = opsbot("testdrive", "--dir", str(dest), "--no-input", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert "Pin opsbot config (opsbot init)" in git(dest, "log", "--format=%s")


def test_branch_per_env_pr_targets_the_env_branch(tmp_path: Path) -> None:
    repo = make_repo("branch-per-env", tmp_path / "r")
    main_before = git(repo, "rev-parse", "main")
    out = json.loads(opsbot("run", "scale shop 3 in production", "--repo", str(repo), "--json").stdout)
    assert out["base"] == {"branch": "production", "sha": git(repo, "rev-parse", "production").strip()}
    assert opsbot("run", "approve R1", "--repo", str(repo), user="bob").returncode == 0
    assert opsbot("merge", "R1", "--repo", str(repo), user="bob").returncode == 0
    assert "replicas: 3" in git(repo, "show", "production:deploy/deployment.yaml")
    assert git(repo, "rev-parse", "main") == main_before  # main untouched by the merge
    assert "replicas: 3" not in git(repo, "show", "staging:deploy/deployment.yaml")


def test_protected_env_in_repo_config_denies_without_roles(fleet: Path) -> None:
    (fleet / ".opsbot.yaml").write_text(
        "environments:\n  staging: {path: overlays/staging}\n"
        "  production: {path: overlays/production, protected: true}\n")
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "protect production")
    p = opsbot("run", "scale frontend 4 in production", "--repo", str(fleet))
    assert p.returncode == 2 and "production is protected" in p.stderr
    j = opsbot("run", "scale frontend 4 in production", "--repo", str(fleet), "--json")
    assert json.loads(j.stdout) | {"error": ""} == {"error": "", "kind": "refused", "denied": True}
    assert opsbot("plan", "scale frontend 4 in staging", "--repo", str(fleet)).returncode == 0


def test_parse_errors_under_json_are_objects_too(fleet: Path) -> None:
    for args in (["plan", "scael frontend 5 in production"], ["plan", "approve R1"]):
        p = opsbot(*args, "--repo", str(fleet), "--json")
        assert p.returncode == 2, p.stderr
        out = json.loads(p.stdout)
        assert out["kind"] == "refused" and out["error"] == p.stderr.strip().removeprefix("opsbot: ")


def test_an_internal_error_is_kind_internal_with_exit_3(fleet: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from opsbot import cli
    from opsbot.core import dispatcher

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug, not the person's fault")

    monkeypatch.setattr(dispatcher, "authorize", broken)
    monkeypatch.setenv("OPSBOT_USER", "alice")
    code = cli.main(["plan", "scale frontend 5 in production", "--repo", str(fleet), "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 3 and out["kind"] == "internal" and out["reference"]
    assert f"reference {out['reference']}" in out["error"] and "a bug" not in out["error"]

    monkeypatch.setattr(cli, "cmd_prs", broken)  # outside the dispatcher: main() catches it
    code = cli.main(["prs", "--repo", str(fleet), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 3 and out["kind"] == "internal" and "Nothing was changed" in out["error"]


def test_cli_answers_show_no_slack_markup(fleet: Path) -> None:
    assert opsbot("run", "scale frontend 5 in production", "--repo", str(fleet)).returncode == 0
    approved = opsbot("run", "approve R1", "--repo", str(fleet), user="bob")
    assert approved.stdout.startswith("Approved by @bob (1/") and "<@" not in approved.stdout, approved.stdout
    merged = opsbot("run", "merge R1", "--repo", str(fleet), "--json", user="bob")
    text = json.loads(merged.stdout)["text"]
    assert text.startswith("Merged by @bob as ") and "<@" not in text


def test_one_replica_is_singular(fleet: Path) -> None:
    """Issue 11 item 8: "1 replicas" nowhere."""
    same = opsbot("plan", "scale worker 1 in dev", "--repo", str(fleet))
    assert same.returncode == 0 and "worker already runs 1 replica in dev." in same.stdout, same.stdout
    one = json.loads(opsbot("plan", "scale frontend 1 in staging", "--repo", str(fleet), "--json").stdout)
    assert one["summary"] == "Scale frontend to 1 replica in staging"
    status = opsbot("plan", "status worker", "--repo", str(fleet))
    assert "dev: " in status.stdout and "· 1 replica" in status.stdout and "1 replicas" not in status.stdout


def test_create_cluster_on_the_bundled_template_says_it_is_the_docker_test_provider(tmp_path: Path,
                                                                                    fleet: Path) -> None:
    out = json.loads(opsbot("plan", "create cluster edge-9", "--repo", str(fleet), "--json").stdout)
    (note,) = out["notes"]
    assert "bundled default template" in note and "Docker provider (CAPD)" in note and "not for real clusters" in note
    text = opsbot("plan", "create cluster edge-9", "--repo", str(fleet)).stdout
    assert "note: The repo has no cluster template" in text
    # a template of the repo's own gets no such note
    own = make_repo("cluster-templates", tmp_path / "own")
    mine = json.loads(opsbot("plan", "create cluster edge-4 from aws-small aws_region=eu-west-1 ssh_key_name=ops",
                             "--repo", str(own), "--json").stdout)
    assert mine["notes"] == []


def test_a_missing_or_non_git_repo_is_a_refusal(tmp_path: Path) -> None:
    p = opsbot("plan", "status", "--repo", str(tmp_path / "nope"), "--json")
    assert p.returncode == 2 and json.loads(p.stdout) == {
        "error": f"{tmp_path / 'nope'} is not a directory: point --repo (or OPSBOT_REPO) at the manifest repo.",
        "kind": "refused"}
    (tmp_path / "plain").mkdir()
    c = opsbot("check", "--repo", str(tmp_path / "plain"))
    assert c.returncode == 2 and "is not a Git repository" in c.stderr and c.stdout == ""
