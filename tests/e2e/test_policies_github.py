"""Policies on the GitHub double through the CLI in real processes: the `opsbot/policy` commit
status is set with GitHub's own request and shapes, a freeze turns it to failure on every open PR so
that branch protection refuses a merge by hand, `opsbot merge` is refused with who and why, and
unfreezing turns it back. The double refuses statuses GitHub refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

from tests.e2e.test_github_flow import CMD, World, _scaled_down, make_world
from tests.plugins.github import TOKEN

__all__ = ["make_world"]


def _status_calls(w: World) -> list[Any]:
    return w.double.api_calls("POST", r"/statuses/[0-9a-f]{40}$")


GOVERNED = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production:
    path: overlays/production
    promote_from: staging
    windows:
      - {kind: deny, schedule: "0 3 29 2 *", duration: 1h, timezone: UTC, reason: leap-day maintenance}
"""


def test_a_freeze_sets_failing_statuses_that_stop_merges_on_github_and_in_opsbot(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    # production is governed (a deny window, not open now), so its PRs carry `opsbot/policy` from the start
    w.double.commit_files("main", {".opsbot.yaml": GOVERNED}, message="a window in production")
    _scaled_down(w.double)
    w.double.protect("main", required_status_checks=("opsbot/policy",))
    w.double.reset_log()

    run = w.cli_json("run", CMD)
    rid, branch = run["request"], run["branch"]
    head = w.double.branch_sha(branch)
    assert head is not None
    calls = w.double.api_calls()
    print(f"\n[github requests] run with policies: {len(calls)}: " + ", ".join(f"{c.method} {c.path.split('/acme/fleet')[-1]}" for c in calls))
    assert len(_status_calls(w)) == 1
    sent = _status_calls(w)[0].json
    assert sent == {"state": "success", "context": "opsbot/policy",
                    "description": "No window or freeze blocks merges to production",
                    "target_url": run["pr"]["url"]}  # fmt: skip
    assert w.double.statuses[head] == {"opsbot/policy": "success"}

    frozen = w.cli("run", "freeze production for 3h because quarterly audit", user="carol")
    assert "production is frozen by @carol because quarterly audit" in frozen.stdout
    assert w.double.statuses[head] == {"opsbot/policy": "failure"}
    (listed,) = requests.get(
        f"{w.running.api_url}/repos/{w.double.full_name}/commits/{head}/statuses",
        headers={"Authorization": f"token {TOKEN}"}, timeout=10,
    ).json()[:1]  # fmt: skip
    assert (listed["state"], listed["context"]) == ("failure", "opsbot/policy")
    assert listed["description"] == "production frozen by carol: quarterly audit"
    assert listed["creator"]["login"] == w.double.bot_login and listed["id"] and listed["created_at"]

    # a person pressing Merge on GitHub is stopped by the required check
    by_hand = requests.put(
        f"{w.running.api_url}/repos/{w.double.full_name}/pulls/1/merge",
        headers={"Authorization": f"token {TOKEN}"}, json={"merge_method": "merge"}, timeout=10,
    )  # fmt: skip
    assert by_hand.status_code == 405
    assert by_hand.json()["message"] == 'Required status check "opsbot/policy" is failing.'

    refused = w.cli("merge", rid, user="bob", ok=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"opsbot: {rid} cannot merge now. production is frozen by @carol")
    assert w.double.api_calls("PUT", r"/merge$")[-1:] and len(w.double.api_calls("PUT", r"/merge$")) == 1

    w.cli("run", "unfreeze production", user="bob")
    assert w.double.statuses[head] == {"opsbot/policy": "success"}
    merged = w.cli_json("merge", rid, user="bob")
    assert merged["state"] == "merged"


def test_the_double_refuses_statuses_github_refuses(make_world: Callable[..., World]) -> None:
    w = make_world()
    head = w.double.branch_sha("main")
    url = f"{w.running.api_url}/repos/{w.double.full_name}/statuses"
    auth = {"Authorization": f"token {TOKEN}"}

    def post(sha: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{url}/{sha}", headers=auth, data=json.dumps(body), timeout=10)

    missing = post("0" * 40, {"state": "success"})
    assert missing.status_code == 422 and missing.json()["message"] == f"No commit found for SHA: {'0' * 40}"
    assert post("main", {"state": "success"}).status_code == 422  # a ref is not a SHA here
    bad_state = post(head, {"state": "green"})
    assert bad_state.status_code == 422 and bad_state.json()["errors"][0]["field"] == "state"
    long = post(head, {"state": "success", "description": "x" * 141})
    assert long.status_code == 422 and "maximum is 140" in long.json()["errors"][0]["message"]
    link = post(head, {"state": "success", "target_url": "file:///etc/passwd"})
    assert link.status_code == 422
    ok = post(head, {"state": "pending", "context": "ci/test"})
    assert ok.status_code == 201 and ok.json()["context"] == "ci/test"
    assert requests.post(f"{url}/{head}", data="{}", timeout=10).status_code == 401  # no token
    assert w.double.statuses[head] == {"ci/test": "pending"}


AUTO_REVERT = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production: {path: overlays/production, promote_from: staging, auto_revert: true}
"""


def test_a_failed_request_on_github_gets_one_revert_pr_planned_on_the_merged_base(
    make_world: Callable[..., World],
) -> None:
    from opsbot.core.model import RequestState

    w = make_world()
    w.double.commit_files("main", {".opsbot.yaml": AUTO_REVERT}, message="auto_revert in production")
    _scaled_down(w.double)  # production runs 2; the request makes it 3
    rid = w.cli_json("run", CMD)["request"]
    assert w.cli_json("merge", rid, user="bob")["state"] == "merged"

    bot = w.receiver.bot  # the server's bot; its mirror has not seen the merge yet
    assert bot.store.transition(rid, RequestState.FAILED, "flux", "HealthCheckFailed") is not None
    revert = bot.policies.on_failed(bot.store.get_request(rid))
    assert revert is not None and revert.command == "scale frontend 2 in production"
    assert bot.policies.on_failed(bot.store.get_request(rid)) is None  # told twice: still one revert
    (pull,) = w.double.open_pulls()
    assert pull.number == revert.pr_number == 2
    head = w.double.branch_sha(pull.head)
    assert head is not None and "count: 2" in w.double.show(head, "overlays/production/kustomization.yaml")
    # production has no window, gate or freeze: no `opsbot/policy` status, so no extra forge request
    assert head not in w.double.statuses
    assert [r.action for r in bot.store.audit_list(request_id=rid)][-2:] == ["failed", "revert"]


GATED = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production:
    path: overlays/production
    promote_from: staging
    gates: [{name: staging errors, prometheus: 'sum(rate(errors_total[5m])) < 1', for: all}]
"""


def test_gate_results_are_an_opsbot_gate_status_on_github(make_world: Callable[..., World]) -> None:
    from tests.doubles.prometheus import PrometheusDouble, serve_prometheus

    double = PrometheusDouble()
    with serve_prometheus(double) as url:
        w = make_world(extra_env={"PROMETHEUS_URL": url})
        w.double.commit_files("main", {".opsbot.yaml": GATED}, message="gate production")
        _scaled_down(w.double)
        run = w.cli_json("run", CMD)
        head = w.double.branch_sha(run["branch"])
        assert head is not None
        refused = w.cli("merge", run["request"], user="bob", ok=False)
        assert refused.returncode == 2
        assert "gate staging errors: fail (the query returned no samples)" in refused.stderr
        assert w.double.statuses[head] == {"opsbot/policy": "success", "opsbot/gate": "failure"}
        double.set("sum(rate(errors_total[5m])) < 1", "0.3")
        assert w.cli_json("merge", run["request"], user="bob")["state"] == "merged"
        assert w.double.statuses[head]["opsbot/gate"] == "success"
        gate_statuses = [s for s in w.double.status_log if s["context"] == "opsbot/gate"]
        assert [s["description"] for s in gate_statuses] == ["staging errors: fail", "1 gate(s) passed"]


def test_a_lock_refusal_links_the_holders_pr(make_world: Callable[..., World]) -> None:
    w = make_world()
    _scaled_down(w.double)
    run = w.cli_json("run", CMD, user="alice")
    w.cli("run", "lock frontend in production because rollout watch", user="alice")
    refused = w.cli("run", "scale frontend 4 in production", user="bob", ok=False)
    assert refused.returncode == 2
    assert "locked by @alice because rollout watch, since " in refused.stderr
    assert f"Their PR: {run['pr']['url']} Ask them to `unlock frontend in production` when done." in refused.stderr
    assert len(w.double.open_pulls()) == 1
