"""GitHubForge against the GitHub double: real PyGithub, real HTTP, real Git objects.

Run with `-p tests.plugins.github` until the plugin is registered in tests/conftest.py.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from opsbot.errors import CommandError, HeadChanged, PermanentError
from opsbot.settings import Secret, Settings
from tests.doubles.github import GitHubDouble, RunningDouble
from tests.plugins.github import SEED_FILES, TOKEN, FakeClock, make_change

KUSTOMIZATION = "apps/web/production/kustomization.yaml"
SCALED = SEED_FILES[KUSTOMIZATION].replace("count: 2", "count: 3")


def _base(double: GitHubDouble) -> str:
    sha = double.branch_sha("main")
    assert sha
    return sha


def _open(forge: Any, double: GitHubDouble, branch: str = "opsbot/scale-web-production", **files: str) -> Any:
    change = make_change(_base(double), files or {KUSTOMIZATION: SCALED})
    return forge.open_pr(change, branch, "Scale web to 3 in production", "body", ["opsbot"])


# ------------------------------------------------------------------------------------- open_pr


def test_open_pr_creates_exactly_the_branch_with_exactly_the_files(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    base = _base(github_double)
    pr = _open(github_forge, github_double)

    assert pr.created and pr.number == 1 and pr.state == "open"
    assert pr.branch == "opsbot/scale-web-production" and pr.base_branch == "main"
    head = github_double.branch_sha("opsbot/scale-web-production")
    assert pr.head_sha == head
    assert github_double.show(head, KUSTOMIZATION) == SCALED
    # every other file is byte-identical, nothing added or removed, one commit on the base
    for path, text in SEED_FILES.items():
        if path != KUSTOMIZATION:
            assert github_double.show(head, path) == text
    assert sorted(github_double.repo.files(head)) == sorted(SEED_FILES)
    assert github_double.repo.read_commit(head)["parents"] == [base]
    assert github_double.repo.read_commit(head)["message"].startswith("Scale web to 3 in production")
    assert github_double.pulls[1].labels == ["opsbot"]
    assert pr.url.endswith("/acme/fleet/pull/1")


@pytest.mark.parametrize("count", [1, 30])
def test_open_pr_request_count_is_bounded_whatever_the_number_of_files(
    github_forge: Any, github_double: GitHubDouble, count: int, capsys: pytest.CaptureFixture[str]
) -> None:
    github_forge.refresh()  # warm: the mirror exists
    github_double.reset_log()
    files = {f"clusters/c{i:02d}/values.yaml": f"replicas: {i}\n" for i in range(count)}
    pr = _open(github_forge, github_double, "opsbot/many", **files)

    calls = github_double.api_calls()
    with capsys.disabled():
        print(
            f"\n[github requests] open_pr with {count} file(s): {len(calls)} requests: "
            + ", ".join(f"{c.method} {c.path.split('/acme/fleet')[-1]}" for c in calls)
        )
    assert len(calls) <= 6
    assert [c.method for c in calls].count("POST") == len(calls)  # no reads: base tree comes from the mirror
    assert len(github_double.api_calls("POST", r"/git/trees$")) == 1
    tree_body = github_double.api_calls("POST", r"/git/trees$")[0].json
    assert len(tree_body["tree"]) == count and all("content" in e for e in tree_body["tree"])
    head = github_double.branch_sha("opsbot/many")
    for path, text in files.items():
        assert github_double.show(head, path) == text
    assert pr.created


def test_same_branch_twice_returns_the_same_pr_and_opens_no_second(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    first = _open(github_forge, github_double)
    second = _open(github_forge, github_double)
    assert second.number == first.number and not second.created
    assert len(github_double.pulls) == 1
    assert len(github_double.api_calls("POST", r"/pulls$")) == 1


def test_reference_already_exists_without_a_pr_moves_the_branch_and_opens_the_pr(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    # a leftover branch (an earlier attempt died after creating the ref), with stale content
    stale = github_double.commit_files("opsbot/leftover", {"README.md": "stale\n"}, message="stale")
    assert stale
    pr = _open(github_forge, github_double, "opsbot/leftover")
    assert pr.created and len(github_double.pulls) == 1
    head = github_double.branch_sha("opsbot/leftover")
    assert github_double.show(head, KUSTOMIZATION) == SCALED
    assert github_double.show(head, "README.md") == SEED_FILES["README.md"]
    assert github_double.api_calls("POST", r"/git/refs$")  # tried to create
    assert github_double.api_calls("PATCH", r"/git/refs/heads/opsbot/leftover$")  # then forced


def test_find_get_list_comment_close(github_forge: Any, github_double: GitHubDouble) -> None:
    pr = _open(github_forge, github_double)
    assert github_forge.find_open_pr(pr.branch).number == pr.number
    assert github_forge.find_open_pr("opsbot/nothing-here") is None
    assert github_forge.get_pr(pr.number).head_sha == pr.head_sha
    assert [p.number for p in github_forge.list_prs()] == [pr.number]

    github_forge.comment(pr.number, "Approved in Slack by @bob")
    closed = github_forge.close_pr(pr.number, comment="Cancelled by @alice")
    assert closed.state == "closed"
    assert [c["body"] for c in github_double.pulls[pr.number].comments] == [
        "Approved in Slack by @bob",
        "Cancelled by @alice",
    ]
    assert github_forge.find_open_pr(pr.branch) is None
    assert github_forge.list_prs("open") == []
    assert [p.number for p in github_forge.list_prs("closed")] == [pr.number]
    assert github_forge.close_pr(pr.number).state == "closed"  # closing twice is a no-op


# ------------------------------------------------------------------------------------- update / merge


def test_update_pr_after_the_base_moved_replans_on_the_new_base(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    pr = _open(github_forge, github_double)
    moved = github_double.commit_files("main", {"README.md": "# fleet, moved\n"}, message="someone else")
    github_forge.refresh()
    change = make_change(moved, {KUSTOMIZATION: SCALED})
    updated = github_forge.update_pr(pr.number, change, "Scale web to 3 in production")

    head = github_double.branch_sha(pr.branch)
    assert updated.head_sha == head != pr.head_sha
    assert github_double.repo.read_commit(head)["parents"] == [moved]  # re-planned, not merged
    assert github_double.show(head, "README.md") == "# fleet, moved\n"
    assert github_double.show(head, KUSTOMIZATION) == SCALED
    assert github_double.pulls[pr.number].state == "open"


def test_two_prs_on_the_same_file_both_land_when_the_second_is_replanned(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    base = _base(github_double)
    text = SEED_FILES[KUSTOMIZATION]
    one = github_forge.open_pr(
        make_change(base, {KUSTOMIZATION: text.replace("count: 2", "count: 3")}), "opsbot/a", "a", "", []
    )
    cache = "  - name: cache\n    count: 4\n"  # appended right under the line PR a changes
    two = github_forge.open_pr(make_change(base, {KUSTOMIZATION: text + cache}), "opsbot/b", "b", "", [])
    github_forge.merge_pr(one.number, "Merge a")
    # the second now conflicts textually: GitHub refuses, and opsbot says so
    with pytest.raises(CommandError, match="not mergeable"):
        github_forge.merge_pr(two.number, "Merge b")
    # re-plan: the engine builds the same intent again on the new base, the forge moves the branch
    github_forge.refresh()
    new_base = _base(github_double)
    current = github_double.show(new_base, KUSTOMIZATION)
    replanned = make_change(new_base, {KUSTOMIZATION: current + cache})
    github_forge.update_pr(two.number, replanned, "b")
    merged = github_forge.merge_pr(two.number, "Merge b")

    final = github_double.show("main", KUSTOMIZATION)
    assert final == text.replace("count: 2", "count: 3") + cache
    assert merged.merge_sha == github_double.branch_sha("main")


@pytest.mark.parametrize("method", ["merge", "squash"])
def test_merge_makes_a_real_merge_commit(
    make_forge: Any, github_settings: Settings, github_double: GitHubDouble, method: str
) -> None:
    from dataclasses import replace

    forge = make_forge(replace(github_settings, github_merge_method=method))
    base = _base(github_double)
    pr = _open(forge, github_double)
    merged = forge.merge_pr(pr.number, "Scale web to 3 in production\n\nRequested by @alice")

    assert merged.state == "merged" and merged.merge_sha == github_double.branch_sha("main")
    commit = github_double.repo.read_commit(merged.merge_sha)
    expected_parents = [base, pr.head_sha] if method == "merge" else [base]
    assert commit["parents"] == expected_parents
    assert commit["message"].startswith("Scale web to 3 in production")
    assert github_double.show("main", KUSTOMIZATION) == SCALED
    assert github_double.api_calls("PUT", r"/pulls/1/merge$")[0].json["merge_method"] == method
    # a second merge (double click) answers with the merged PR, and merges nothing
    again = forge.merge_pr(pr.number, "again")
    assert again.merge_sha == merged.merge_sha
    assert len(github_double.api_calls("PUT", r"/merge$")) == 1


def test_branch_protection_blocks_with_a_message_naming_the_rule(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    github_double.protect("main", required_approving_review_count=1, required_status_checks=("ci/kustomize",))
    pr = _open(github_forge, github_double)

    with pytest.raises(CommandError) as blocked:
        github_forge.merge_pr(pr.number, "merge")
    assert "approving review is required" in str(blocked.value)
    assert "approving reviews on GitHub" in str(blocked.value)

    github_double.add_review(pr.number, "bob", "APPROVED")
    with pytest.raises(CommandError, match='Required status check "ci/kustomize" is expected'):
        github_forge.merge_pr(pr.number, "merge")

    github_double.set_status(pr.head_sha, "ci/kustomize", "success")
    assert github_forge.merge_pr(pr.number, "merge").state == "merged"
    assert len(github_double.api_calls("PUT", r"/merge$")) == 3  # no retry loop on refusals


def test_merge_of_a_pr_whose_head_moved_is_refused_with_409(
    github_forge: Any, github_double: GitHubDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    pr = _open(github_forge, github_double)
    # someone pushes to the branch between opsbot reading the PR and merging it
    original = github_double.pull_json

    def stale_head(base: str, p: Any) -> dict[str, Any]:
        data = original(base, p)
        data["head"]["sha"] = pr.head_sha
        return data

    github_double.commit_files(pr.branch, {"README.md": "pushed by hand\n"})
    monkeypatch.setattr(github_double, "pull_json", stale_head)
    with pytest.raises(HeadChanged, match="Head branch was modified") as refused:
        github_forge.merge_pr(pr.number, "merge")
    assert "review it again" in str(refused.value)


def test_merge_sends_the_approved_head_and_refuses_another(github_forge: Any, github_double: GitHubDouble) -> None:
    """What was approved is what merges: the approved head goes to GitHub as `sha`, or nothing is sent."""
    pr = _open(github_forge, github_double)
    approved = pr.head_sha
    pushed = github_double.commit_files(pr.branch, {"README.md": "pushed by hand\n"}, author="dave")
    with pytest.raises(HeadChanged, match=f"at {pushed[:7]}, not the approved {approved[:7]}") as refused:
        github_forge.merge_pr(pr.number, "merge", expected_head=approved)
    assert refused.value.head_sha == pushed
    assert github_double.api_calls("PUT", r"/merge$") == []
    merged = github_forge.merge_pr(pr.number, "merge", expected_head=pushed)
    assert merged.state == "merged"
    (call,) = github_double.api_calls("PUT", r"/merge$")
    assert call.json["sha"] == pushed
    assert github_double.repo.read_commit(merged.merge_sha)["parents"][1] == pushed


def test_closed_pr_cannot_be_merged_or_updated(github_forge: Any, github_double: GitHubDouble) -> None:
    pr = _open(github_forge, github_double)
    github_double.close_by_hand(pr.number)
    with pytest.raises(CommandError, match="closed"):
        github_forge.merge_pr(pr.number, "merge")
    with pytest.raises(CommandError, match="closed"):
        github_forge.update_pr(pr.number, make_change(_base(github_double), {KUSTOMIZATION: SCALED}), "m")


# ------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("kind", "path", "expected_sleep"),
    [
        ("secondary", r"/git/refs$", 7.0),  # Retry-After: 7
        ("primary", r"/pulls$", 8.0),  # X-RateLimit-Reset = now + 7 (+1 s margin)
        ("429", r"/git/trees$", 7.0),
        ("502", r"/git/commits$", 1.0),  # backoff_base
        ("500", r"/pulls$", 1.0),
    ],
)
def test_faults_are_retried_and_leave_no_duplicate(
    github_forge: Any,
    github_double: GitHubDouble,
    fake_clock: FakeClock,
    kind: str,
    path: str,
    expected_sleep: float,
) -> None:
    github_double.inject(kind, 1, method="POST", path=path, seconds=7)
    pr = _open(github_forge, github_double)
    assert pr.created and pr.number == 1
    assert len(github_double.pulls) == 1
    assert len(github_double.api_calls("POST", path)) == 2  # the refused one and the retry
    assert len(fake_clock.sleeps) == 1
    assert fake_clock.sleeps[0] == pytest.approx(expected_sleep, abs=1.5)
    refs = github_double.repo.git("for-each-ref", "--format=%(refname)", "refs/heads/").split()
    assert refs == ["refs/heads/main", "refs/heads/opsbot/scale-web-production"]


@pytest.mark.parametrize("path", [r"/git/refs$", r"/pulls$"])
def test_a_timeout_after_github_did_the_write_is_retried_without_a_duplicate(
    make_forge: Any, github_double: GitHubDouble, fake_clock: FakeClock, path: str
) -> None:
    forge = make_forge(timeout=1)
    # GitHub processes the request, then the answer never arrives in time
    github_double.inject("delay", 1, method="POST", path=path, seconds=2.5, after=True)
    pr = forge.open_pr(
        make_change(_base(github_double), {KUSTOMIZATION: SCALED}), "opsbot/slow", "m", "b", ["opsbot"]
    )
    assert pr.number == 1 and len(github_double.pulls) == 1
    assert pr.created  # it was this command that made it, even though the answer was lost
    assert github_double.pulls[1].labels == ["opsbot"]
    assert fake_clock.sleeps == [1.0]
    assert github_double.show(github_double.branch_sha("opsbot/slow"), KUSTOMIZATION) == SCALED


def test_persistent_502_is_a_permanent_error_after_bounded_attempts(
    make_forge: Any, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    forge = make_forge(max_attempts=4)
    github_double.inject("502", 100, path=r"/git/trees$")
    with pytest.raises(PermanentError) as failed:
        _open(forge, github_double)
    assert "GitHub refused" in str(failed.value) and "502" in str(failed.value)
    assert len(github_double.api_calls("POST", r"/git/trees$")) == 4
    assert fake_clock.sleeps == [1.0, 2.0, 4.0]  # bounded exponential backoff
    assert github_double.pulls == {}


def test_a_rate_limit_resetting_beyond_the_budget_fails_at_once_with_when_to_retry(
    make_forge: Any, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    forge = make_forge(max_total_sleep=60)
    github_double.inject("primary", 1, path=r"^/repos/", seconds=1800)
    with pytest.raises(PermanentError, match=r"rate limit is used up; try again in about 18\d\d s"):
        _open(forge, github_double)
    assert fake_clock.sleeps == []


def test_permanent_refusals_are_not_retried_and_say_why(
    make_forge: Any, github_settings: Settings, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    from dataclasses import replace

    bad = make_forge(replace(github_settings, github_token=Secret("ghp_wrong_secret_value")))
    with pytest.raises(PermanentError, match="bad credentials") as refused:
        bad.list_prs()
    assert "ghp_wrong_secret_value" not in str(refused.value)

    missing = make_forge(replace(github_settings, github_repository="acme/nope"))
    with pytest.raises(PermanentError, match=r"not found \(404\).*acme/nope"):
        missing.list_prs()
    assert fake_clock.sleeps == []


# ------------------------------------------------------------------------------------- mirror


def test_mirror_clones_and_fetches_over_smart_http_with_the_token(
    github_forge: Any, github_double: GitHubDouble, github_settings: Settings
) -> None:
    path = Path(github_forge.repo_path())
    assert path == Path(github_settings.state_dir).absolute() / "mirror" / "acme" / "fleet.git"
    git = ["git", "--git-dir", str(path)]

    def rev(name: str) -> str:
        return subprocess.run([*git, "rev-parse", name], capture_output=True, text=True).stdout.strip()

    assert rev("main") == _base(github_double)
    # the token is not stored anywhere in the mirror
    config = (path / "config").read_text()
    assert TOKEN not in config and "extraheader" not in config.lower()
    assert github_double.requests[-1].kind == "git"

    moved = github_double.commit_files("main", {"README.md": "new\n"})
    github_double.commit_files("feature", {"x": "y\n"})
    assert github_forge.refresh_if_stale() is False  # fresh enough: no fetch
    github_forge.refresh()
    assert rev("main") == moved
    # prune: a branch deleted on GitHub goes away in the mirror
    github_double.repo.delete_ref("refs/heads/feature")
    github_forge.refresh()
    assert rev("feature") in ("", "feature")  # gone


def test_mirror_refresh_if_stale_honours_the_max_age(
    github_forge: Any, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    github_forge.repo_path()
    fetches = len([r for r in github_double.requests if r.kind == "git"])
    github_forge.repo_path()
    assert len([r for r in github_double.requests if r.kind == "git"]) == fetches
    fake_clock.advance(61)
    github_forge.repo_path()
    assert len([r for r in github_double.requests if r.kind == "git"]) > fetches


def test_mirror_with_a_wrong_token_fails_clearly_and_leaks_nothing(
    make_forge: Any, github_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    caplog.set_level(logging.DEBUG)
    forge = make_forge(replace(github_settings, github_token=Secret("ghp_wrong_secret_value")))
    with pytest.raises(PermanentError, match="authentication failed") as failed:
        forge.refresh()
    assert "ghp_wrong_secret_value" not in str(failed.value)
    assert "ghp_wrong_secret_value" not in caplog.text


def test_mirror_fetch_retries_a_flaky_remote_and_gives_up_on_a_dead_one(
    make_forge: Any, github_settings: Settings, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    from dataclasses import replace

    forge = make_forge()
    github_double.inject("502", 1, path=r"^/acme/fleet\.git/info/refs")
    forge.refresh()
    assert fake_clock.sleeps == [1.0]
    main = subprocess.run(
        ["git", "--git-dir", forge.repo_path(), "rev-parse", "main"], capture_output=True, text=True
    ).stdout.strip()
    assert main == _base(github_double)

    dead = make_forge(
        replace(github_settings, state_dir=github_settings.state_dir + "-dead"),
        git_url="http://127.0.0.1:9/acme/fleet.git",
        max_attempts=3,
    )
    fake_clock.sleeps.clear()
    with pytest.raises(PermanentError, match=r"mirror fetch of acme/fleet.*\(3 attempts\)"):
        dead.refresh()
    assert fake_clock.sleeps == [1.0, 2.0]


def test_open_pr_fetches_the_mirror_when_the_base_is_newer_than_it(
    github_forge: Any, github_double: GitHubDouble
) -> None:
    github_forge.refresh()
    moved = github_double.commit_files("main", {"README.md": "moved\n"})
    pr = github_forge.open_pr(make_change(moved, {KUSTOMIZATION: SCALED}), "opsbot/new-base", "m", "b", [])
    assert github_double.repo.read_commit(pr.head_sha)["parents"] == [moved]
    with pytest.raises(CommandError, match="not on GitHub"):
        github_forge.open_pr(make_change("f" * 40, {KUSTOMIZATION: SCALED}), "opsbot/ghost", "m", "b", [])


def test_no_secret_in_logs_or_argv(
    github_forge: Any,
    github_double: GitHubDouble,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def spy(args: Any, *a: Any, **kw: Any) -> Any:
        argvs.append(list(args))
        return real_run(args, *a, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    _open(github_forge, github_double)
    github_forge.refresh()
    assert argvs and not any(TOKEN in " ".join(a) for a in argvs)
    assert TOKEN not in caplog.text


# ------------------------------------------------------------------------------------- App auth


def _app_forge(
    make_forge: Any, github_settings: Settings, github_double: GitHubDouble, app_keypair: tuple[str, str]
) -> Any:
    from dataclasses import replace

    private, public = app_keypair
    github_double.app_id = "12345"
    github_double.app_public_key = public
    return make_forge(
        replace(
            github_settings,
            github_token=Secret(""),
            github_app_id="12345",
            github_app_private_key=Secret(private),
            github_app_installation_id=str(github_double.installation_id),
        )
    )


def test_github_app_auth_gets_an_installation_token_and_refreshes_it(
    make_forge: Any,
    github_settings: Settings,
    github_double: GitHubDouble,
    github_server: RunningDouble,
    app_keypair: tuple[str, str],
    fake_clock: FakeClock,
) -> None:
    forge = _app_forge(make_forge, github_settings, github_double, app_keypair)
    pr = _open(forge, github_double)
    assert pr.created
    assert len(github_double.issued_tokens) == 1
    # the mirror uses the same (fresh) installation token
    forge.refresh()
    assert len(github_double.issued_tokens) == 1

    # an hour later the token is about to expire: a new one is minted before the next call
    fake_clock.advance(3600)
    assert forge.get_pr(pr.number).number == pr.number
    assert len(github_double.issued_tokens) == 2

    # GitHub revoked it early: the 401 mints a new token and the call goes through
    github_double.expire_tokens()
    assert forge.find_open_pr(pr.branch) is not None
    assert len(github_double.issued_tokens) == 3
    github_double.expire_tokens()
    forge.refresh()
    assert len(github_double.issued_tokens) == 4


def test_github_app_with_the_wrong_key_is_refused(
    make_forge: Any, github_settings: Settings, github_double: GitHubDouble, app_keypair: tuple[str, str]
) -> None:
    from tests.doubles.github import make_app_keypair

    forge = _app_forge(make_forge, github_settings, github_double, app_keypair)
    github_double.app_public_key = make_app_keypair()[1]  # GitHub knows another key
    with pytest.raises(PermanentError, match="bad credentials"):
        forge.list_prs()
    assert github_double.issued_tokens == []


def test_errors_and_retries_are_counted_in_the_bots_metrics(
    make_forge: Any, github_double: GitHubDouble, fake_clock: FakeClock
) -> None:
    from opsbot.metrics import Metrics

    metrics = Metrics()
    forge = make_forge(metrics=metrics)
    github_double.inject("secondary", 1, method="POST", path=r"/git/refs$", seconds=7)
    github_double.inject("502", 1, method="POST", path=r"/git/commits$")
    _open(forge, github_double)
    assert len(fake_clock.sleeps) == 2

    def count(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert count("opsbot_api_errors_total", api="github", kind="rate_limited") == 1
    assert count("opsbot_api_errors_total", api="github", kind="server_error") == 1
    assert count("opsbot_api_retries_total", api="github") == 2
    # out of attempts: the failure is an error, and no retry follows it
    github_double.inject("502", 100, path=r"/pulls/1$")
    with pytest.raises(PermanentError):
        make_forge(metrics=metrics, max_attempts=1).get_pr(1)
    assert count("opsbot_api_errors_total", api="github", kind="server_error") == 2
    assert count("opsbot_api_retries_total", api="github") == 2
