"""Policies through the CLI in a real process: freeze blocks `opsbot merge`, the audit log exports
as JSON and CSV, and `plan` refuses to run a policy command (plan touches nothing)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.integration.test_cli import git, opsbot


def test_freeze_blocks_a_cli_merge_and_the_audit_log_exports(fleet: Path) -> None:
    repo = str(fleet)
    run = opsbot("run", "deploy api 2.4.0 to production", "--repo", repo, "--json")
    assert run.returncode == 0, run.stderr
    request = json.loads(run.stdout)["request"]

    frozen = opsbot("run", "freeze production because quarter-end close", "--repo", repo, user="carol")
    assert frozen.returncode == 0, frozen.stderr
    assert "production is frozen by @carol because quarter-end close" in frozen.stdout

    blocked = opsbot("merge", request, "--repo", repo, user="bob")
    assert blocked.returncode == 2
    assert blocked.stderr.startswith(f"opsbot: {request} cannot merge now. production is frozen by @carol")
    assert blocked.stderr.count("\n") == 1
    assert git(fleet, "log", "--merges", "--format=%H", "main") == ""

    assert opsbot("run", "unfreeze production", "--repo", repo, user="bob").returncode == 0
    merged = opsbot("merge", request, "--repo", repo, user="bob")
    assert merged.returncode == 0, merged.stderr

    out = opsbot("audit", "--repo", repo, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("proposed", "alice"),
        ("opened", "alice"),
        ("freeze", "carol"),
        ("blocked", "bob"),
        ("unfreeze", "bob"),
        ("merged", "bob"),
    ]
    assert rows[2]["reason"] == "quarter-end close" and rows[2]["env"] == "production"
    assert rows[1]["pr"] == 1 and rows[1]["detail"].startswith("file://")
    assert set(rows[0]) == {"id", "at", "actor", "action", "request", "pr", "app", "env", "reason", "detail"}

    table = opsbot("audit", "--repo", repo, "--csv", "--env", "production", "--since", "2000-01-01")
    assert table.returncode == 0, table.stderr
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["action"] for r in parsed] == [r["action"] for r in rows]
    assert parsed[2]["reason"] == "quarter-end close" and parsed[0]["pr"] == ""
    none = opsbot("audit", "--repo", repo, "--json", "--app", "frontend")
    assert json.loads(none.stdout) == []
    bad = opsbot("audit", "--repo", repo, "--since", "last tuesday")
    assert bad.returncode == 2 and "is not a date" in bad.stderr


def test_plan_refuses_policy_commands_and_touches_nothing(fleet: Path) -> None:
    p = opsbot("plan", "freeze production", "--repo", str(fleet))
    assert p.returncode == 2 and "`plan` only computes changes" in p.stderr
    rows = json.loads(opsbot("audit", "--repo", str(fleet), "--json").stdout)
    assert rows == []


def _pin(fleet: Path, config: str) -> None:
    (fleet / ".opsbot.yaml").write_text(config)
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "pin config with policies")


def test_a_lock_and_a_window_in_the_cli(fleet: Path) -> None:
    # a deny window that starts every minute and lasts an hour is always in force: no clock needed
    _pin(fleet, (
        "environments:\n"
        "  staging: {path: overlays/staging}\n"
        "  production:\n"
        "    path: overlays/production\n"
        "    promote_from: staging\n"
        "    windows: [{kind: deny, schedule: '* * * * *', duration: 1h, reason: change freeze}]\n"
    ))  # fmt: skip
    repo = str(fleet)
    locked = opsbot("run", "lock frontend in production because migration", "--repo", repo, user="alice")
    assert locked.returncode == 0, locked.stderr
    refused = opsbot("run", "scale frontend 5 in production", "--repo", repo, user="bob")
    assert refused.returncode == 2
    assert refused.stderr.startswith("opsbot: frontend in production is locked by @alice because migration, since ")
    assert "opsbot/" not in git(fleet, "branch", "--list")

    own = opsbot("run", "scale frontend 5 in production", "--repo", repo, "--json", user="alice")
    assert own.returncode == 0, own.stderr
    rid = json.loads(own.stdout)["request"]
    blocked = opsbot("merge", rid, "--repo", repo, user="alice")
    assert blocked.returncode == 2
    assert 'blocked by the deny window "* * * * *" for 1h (UTC) (change freeze), set in .opsbot.yaml, with no end in reach' in blocked.stderr
    listed = opsbot("run", "policies production", "--repo", repo, user="carol")
    assert "in force, with no end in reach" in listed.stdout and "lock of frontend by @alice" in listed.stdout


def test_an_override_from_the_cli_needs_the_role(fleet: Path, tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "rbac:\n"
        "  roles:\n"
        "    team: {commands: ['*'], envs: ['*']}\n"
        "    release-manager: {commands: [override], envs: [production]}\n"
        "  members:\n"
        "    team: [alice, bob, oscar]\n"
        "    release-manager: [oscar]\n"
    )
    repo = str(fleet)
    rid = json.loads(opsbot("--settings", str(settings), "run", "deploy api 2.4.0 to production", "--repo", repo,
                            "--json").stdout)["request"]  # fmt: skip
    opsbot("--settings", str(settings), "run", "freeze production because audit", "--repo", repo, user="alice")
    denied = opsbot("--settings", str(settings), "run", f"merge {rid} override because urgent", "--repo", repo,
                    user="bob")  # fmt: skip
    assert denied.returncode == 2 and "You may not override policies in production" in denied.stderr
    done = opsbot("--settings", str(settings), "run", f"merge {rid} override because CVE-2026-1234 fix", "--repo",
                  repo, user="oscar")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "overrode policies to merge" in done.stdout
    rows = json.loads(opsbot("audit", "--repo", repo, "--json").stdout)
    assert [(r["action"], r["actor"], r["reason"]) for r in rows if r["action"] in ("blocked", "override")] == [
        ("blocked", "bob", "urgent"),
        ("override", "oscar", "CVE-2026-1234 fix"),
    ]
