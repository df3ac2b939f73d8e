"""The GitHub double refuses what GitHub refuses, driven by PyGithub itself (no opsbot code).

A double that accepts anything proves nothing: each test here makes a request GitHub would
refuse and checks the status and message PyGithub sees. Run with `-p tests.plugins.github`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from github import Auth, Github, GithubException, GithubIntegration, InputGitTreeElement
from github.GithubException import BadCredentialsException, RateLimitExceededException, UnknownObjectException

from opsbot.intake.github import PrMerged, PrOpened, Push, ReviewApproved, parse_event, verify_signature
from tests.doubles.github import ZERO_SHA, GitHubDouble, RunningDouble, make_app_keypair, serve_in_loop
from tests.plugins.github import SEED_FILES, TOKEN

FILE = "apps/web/production/kustomization.yaml"


def client(running: RunningDouble, token: str = TOKEN, timeout: int = 15) -> Github:
    return Github(
        base_url=running.api_url,
        auth=Auth.Token(token),
        retry=None,
        seconds_between_requests=0,
        seconds_between_writes=0,
        timeout=timeout,
    )


@pytest.fixture
def gh(github_server: RunningDouble) -> Github:
    return client(github_server)


@pytest.fixture
def repo(gh: Github) -> Any:
    return gh.get_repo("acme/fleet")


def branch_with(repo: Any, double: GitHubDouble, branch: str, text: str, start: str = "main") -> str:
    """Create `branch` from `start` with FILE set to `text`, through the REST API."""
    base = repo.get_git_commit(double.branch_sha(start))
    tree = repo.create_git_tree(
        [InputGitTreeElement(FILE, "100644", "blob", content=text)], base_tree=base.tree
    )
    commit = repo.create_git_commit(f"set {FILE}", tree, [base])
    repo.create_git_ref(f"refs/heads/{branch}", commit.sha)
    return str(commit.sha)


def error_of(exc: pytest.ExceptionInfo[GithubException]) -> tuple[int, str]:
    data = exc.value.data if isinstance(exc.value.data, dict) else {}
    messages = [data.get("message", "")] + [e.get("message", "") for e in data.get("errors", [])]
    return exc.value.status, " | ".join(m for m in messages if m)


# ------------------------------------------------------------------------------------- auth


def test_wrong_token_is_401_bad_credentials(github_server: RunningDouble) -> None:
    with pytest.raises(BadCredentialsException) as exc:
        client(github_server, token="ghp_wrong").get_repo("acme/fleet")
    assert exc.value.status == 401 and exc.value.data["message"] == "Bad credentials"


def test_missing_token_is_401(github_server: RunningDouble) -> None:
    response = requests.get(f"{github_server.api_url}/repos/acme/fleet", timeout=10)
    assert response.status_code == 401


def test_bearer_token_is_accepted(github_server: RunningDouble) -> None:
    response = requests.get(
        f"{github_server.api_url}/repos/acme/fleet", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200 and response.json()["full_name"] == "acme/fleet"


def test_unknown_repo_and_ref_are_404(gh: Github, repo: Any) -> None:
    with pytest.raises(UnknownObjectException):
        gh.get_repo("acme/other")
    with pytest.raises(UnknownObjectException):
        repo.get_git_ref("heads/nope").object  # noqa: B018
    with pytest.raises(UnknownObjectException):
        repo.get_pull(99).title  # noqa: B018


def test_urls_point_back_at_the_double(github_server: RunningDouble, repo: Any) -> None:
    assert repo.url == f"{github_server.api_url}/repos/acme/fleet"
    ref = repo.get_git_ref("heads/main")
    assert ref.object.url.startswith(github_server.api_url)


# ------------------------------------------------------------------------------------- git data


def test_tree_with_base_tree_inline_content_sha_and_deletion(repo: Any, github_double: GitHubDouble) -> None:
    main = github_double.branch_sha("main")
    base = repo.get_git_commit(main)
    blob = repo.create_git_blob("kept by sha\n", "utf-8")
    tree = repo.create_git_tree(
        [
            InputGitTreeElement(FILE, "100644", "blob", content="replicas: []\n"),
            InputGitTreeElement("new/dir/file.yaml", "100644", "blob", sha=blob.sha),
            InputGitTreeElement("README.md", "100644", "blob", sha=None),
        ],
        base_tree=base.tree,
    )
    commit = repo.create_git_commit("edit", tree, [base])
    assert commit.parents[0].sha == main and commit.tree.sha == tree.sha
    assert github_double.show(commit.sha, FILE) == "replicas: []\n"
    assert github_double.show(commit.sha, "new/dir/file.yaml") == "kept by sha\n"
    assert (
        github_double.show(commit.sha, "apps/web/base/deployment.yaml")
        == SEED_FILES["apps/web/base/deployment.yaml"]
    )
    assert "README.md" not in github_double.repo.files(commit.sha)


def test_tree_refusals(repo: Any, github_double: GitHubDouble) -> None:
    base = repo.get_git_commit(github_double.branch_sha("main"))
    with pytest.raises(GithubException) as exc:  # deleting a path that is not there
        repo.create_git_tree(
            [InputGitTreeElement("ghost.yaml", "100644", "blob", sha=None)], base_tree=base.tree
        )
    assert exc.value.status == 422
    with pytest.raises(GithubException) as exc:  # content and sha together
        repo.create_git_tree([InputGitTreeElement("a", "100644", "blob", content="x", sha="a" * 40)])
    assert exc.value.status == 422
    with pytest.raises(GithubException) as exc:  # a sha that is no blob
        repo.create_git_tree([InputGitTreeElement("a", "100644", "blob", sha="b" * 40)])
    assert exc.value.status == 422


def test_commit_with_unknown_parent_or_tree_is_422(repo: Any, github_double: GitHubDouble) -> None:
    base = repo.get_git_commit(github_double.branch_sha("main"))
    with pytest.raises(GithubException) as exc:
        repo.requester.requestJsonAndCheck(
            "POST", f"{repo.url}/git/commits", input={"message": "m", "tree": "c" * 40, "parents": [base.sha]}
        )
    assert error_of(exc) == (422, "Tree SHA does not exist")
    with pytest.raises(GithubException) as exc:
        repo.requester.requestJsonAndCheck(
            "POST",
            f"{repo.url}/git/commits",
            input={"message": "m", "tree": base.tree.sha, "parents": ["d" * 40]},
        )
    assert error_of(exc) == (422, "Parent SHA does not exist or is not a commit object")


def test_create_ref_twice_is_422_reference_already_exists(repo: Any, github_double: GitHubDouble) -> None:
    main = github_double.branch_sha("main")
    repo.create_git_ref("refs/heads/opsbot/x", main)
    with pytest.raises(GithubException) as exc:
        repo.create_git_ref("refs/heads/opsbot/x", main)
    assert error_of(exc) == (422, "Reference already exists")
    with pytest.raises(GithubException) as exc:
        repo.create_git_ref("heads/bad", main)
    assert exc.value.status == 422


def test_ref_update_must_fast_forward_unless_forced(repo: Any, github_double: GitHubDouble) -> None:
    first = branch_with(repo, github_double, "opsbot/ff", "one\n")
    other = branch_with(repo, github_double, "opsbot/other", "two\n")  # not a descendant of `first`
    ref = repo.get_git_ref("heads/opsbot/ff")
    assert ref.object.sha == first
    plural = repo.requester  # PATCH goes to /git/refs/... (plural), as PyGithub's GitRef.url does
    url = f"{repo.url}/git/refs/heads/opsbot/ff"
    with pytest.raises(GithubException) as exc:
        plural.requestJsonAndCheck("PATCH", url, input={"sha": other, "force": False})
    assert error_of(exc) == (422, "Update is not a fast forward")
    plural.requestJsonAndCheck("PATCH", url, input={"sha": other, "force": True})
    assert github_double.branch_sha("opsbot/ff") == other
    with pytest.raises(GithubException) as exc:
        plural.requestJsonAndCheck(
            "PATCH", f"{repo.url}/git/refs/heads/nope", input={"sha": other, "force": True}
        )
    assert error_of(exc) == (422, "Reference does not exist")


# ------------------------------------------------------------------------------------- pulls


def test_second_pr_for_the_same_head_is_422_already_exists(repo: Any, github_double: GitHubDouble) -> None:
    branch_with(repo, github_double, "opsbot/dup", "x\n")
    first = repo.create_pull(base="main", head="opsbot/dup", title="t", body="b")
    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="opsbot/dup", title="t", body="b")
    assert error_of(exc) == (422, "Validation Failed | A pull request already exists for acme:opsbot/dup.")
    found = list(repo.get_pulls(state="open", head="acme:opsbot/dup"))
    assert [p.number for p in found] == [first.number]
    assert list(repo.get_pulls(state="open", head="acme:opsbot/other")) == []


def test_pr_without_diff_or_head_is_422(repo: Any, github_double: GitHubDouble) -> None:
    repo.create_git_ref("refs/heads/opsbot/same", github_double.branch_sha("main"))
    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="opsbot/same", title="t")
    assert error_of(exc) == (422, "Validation Failed | No commits between main and opsbot/same")
    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="opsbot/missing", title="t")
    assert exc.value.status == 422 and exc.value.data["errors"][0]["field"] == "head"


def test_pr_json_shape_is_what_pygithub_reads(repo: Any, github_double: GitHubDouble) -> None:
    head = branch_with(repo, github_double, "opsbot/shape", "y\n")
    pr = repo.create_pull(base="main", head="opsbot/shape", title="Scale", body="why")
    again = repo.get_pull(pr.number)
    assert (again.head.ref, again.head.sha, again.base.ref) == ("opsbot/shape", head, "main")
    assert again.state == "open" and again.merged is False and again.mergeable is True
    assert again.html_url.endswith("/acme/fleet/pull/1") and again.user.login == "opsbot[bot]"
    comment = again.create_issue_comment("hello")  # follows issue_url
    assert comment.body == "hello"
    again.add_to_labels("opsbot", "env:production")
    assert [label.name for label in repo.get_pull(pr.number).labels] == ["opsbot", "env:production"]
    again.edit(state="closed")
    assert repo.get_pull(pr.number).state == "closed"
    assert list(repo.get_pulls(state="open")) == []


def test_merge_conflict_is_405_not_mergeable(repo: Any, github_double: GitHubDouble) -> None:
    branch_with(repo, github_double, "opsbot/a", "a\n")
    branch_with(repo, github_double, "opsbot/b", "b\n")
    a = repo.create_pull(base="main", head="opsbot/a", title="a")
    b = repo.create_pull(base="main", head="opsbot/b", title="b")
    assert a.merge(merge_method="merge").merged
    b = repo.get_pull(b.number)
    assert b.mergeable is False and b.mergeable_state == "dirty"
    with pytest.raises(GithubException) as exc:
        b.merge(merge_method="merge")
    assert error_of(exc) == (405, "Pull Request is not mergeable")


def test_merge_with_a_stale_sha_is_409(repo: Any, github_double: GitHubDouble) -> None:
    branch_with(repo, github_double, "opsbot/s", "s\n")
    pr = repo.create_pull(base="main", head="opsbot/s", title="s")
    with pytest.raises(GithubException) as exc:
        pr.merge(sha="e" * 40)
    assert error_of(exc) == (409, "Head branch was modified. Review and try the merge again.")


def test_merge_and_squash_make_real_commits(repo: Any, github_double: GitHubDouble) -> None:
    main = github_double.branch_sha("main")
    head = branch_with(repo, github_double, "opsbot/m", "m\n")
    pr = repo.create_pull(base="main", head="opsbot/m", title="Merge me")
    status = pr.merge(merge_method="merge", commit_title="Merge me (#1)", sha=head)
    assert status.merged and github_double.branch_sha("main") == status.sha
    assert github_double.repo.read_commit(status.sha)["parents"] == [main, head]
    merged = repo.get_pull(pr.number)
    assert merged.merged and merged.merge_commit_sha == status.sha and merged.state == "closed"
    with pytest.raises(GithubException) as exc:  # merging twice
        merged.merge()
    assert exc.value.status == 405

    head2 = branch_with(repo, github_double, "opsbot/s2", "s2\n")
    pr2 = repo.create_pull(base="main", head="opsbot/s2", title="Squash me")
    status2 = pr2.merge(merge_method="squash")
    assert github_double.repo.read_commit(status2.sha)["parents"] == [status.sha]
    assert github_double.repo.read_commit(status2.sha)["message"].startswith("Squash me (#2)")
    assert github_double.show("main", FILE) == "s2\n" and head2 != status2.sha


def test_merge_method_not_allowed_is_405(repo: Any, github_double: GitHubDouble) -> None:
    github_double.allowed_merge_methods = {"squash"}
    branch_with(repo, github_double, "opsbot/n", "n\n")
    pr = repo.create_pull(base="main", head="opsbot/n", title="n")
    with pytest.raises(GithubException) as exc:
        pr.merge(merge_method="merge")
    assert error_of(exc) == (405, "Merge commits are not allowed on this repository.")


def test_branch_protection_reviews_and_checks_are_405_with_githubs_words(
    repo: Any, github_double: GitHubDouble
) -> None:
    github_double.protect("main", required_approving_review_count=2, required_status_checks=("ci",))
    head = branch_with(repo, github_double, "opsbot/p", "p\n")
    pr = repo.create_pull(base="main", head="opsbot/p", title="p")
    assert repo.get_pull(pr.number).mergeable_state == "blocked"
    with pytest.raises(GithubException) as exc:
        pr.merge()
    assert error_of(exc) == (405, "At least 2 approving reviews are required by reviewers with write access.")
    github_double.add_review(pr.number, "bob")
    github_double.add_review(pr.number, "opsbot[bot]")  # the author's own approval does not count
    github_double.add_review(pr.number, "carol", "CHANGES_REQUESTED")
    with pytest.raises(GithubException) as exc:
        pr.merge()
    assert exc.value.status == 405
    github_double.add_review(pr.number, "carol", "APPROVED")  # carol's latest review counts
    assert [r.state for r in pr.get_reviews()] == ["APPROVED", "APPROVED", "CHANGES_REQUESTED", "APPROVED"]
    with pytest.raises(GithubException) as exc:
        pr.merge()
    assert error_of(exc) == (405, 'Required status check "ci" is expected.')
    github_double.set_status(head, "ci", "failure")
    with pytest.raises(GithubException) as exc:
        pr.merge()
    assert error_of(exc) == (405, 'Required status check "ci" is failing.')
    github_double.set_status(head, "ci", "success")
    assert pr.merge().merged


# ------------------------------------------------------------------------------------- faults


def test_fault_injection_matches_githubs_rate_limit_and_error_shapes(
    github_server: RunningDouble, gh: Github, github_double: GitHubDouble
) -> None:
    github_double.inject("secondary", 1, path=r"^/repos/acme/fleet$", seconds=30)
    with pytest.raises(RateLimitExceededException) as exc:
        gh.get_repo("acme/fleet").full_name  # noqa: B018
    assert exc.value.status == 403 and exc.value.headers["retry-after"] == "30"

    github_double.inject("primary", 1, seconds=600)
    with pytest.raises(RateLimitExceededException) as exc:
        gh.get_repo("acme/fleet").full_name  # noqa: B018
    assert (
        exc.value.headers["x-ratelimit-remaining"] == "0" and int(exc.value.headers["x-ratelimit-reset"]) > 0
    )

    github_double.inject("429", 1, seconds=5)
    with pytest.raises(GithubException) as exc:
        gh.get_repo("acme/fleet").full_name  # noqa: B018
    assert exc.value.status == 429 and exc.value.headers["retry-after"] == "5"

    github_double.inject("502", 1)
    with pytest.raises(GithubException) as exc:
        gh.get_repo("acme/fleet").full_name  # noqa: B018
    assert exc.value.status == 502

    github_double.inject("delay", 1, seconds=2, after=False)
    with pytest.raises(requests.exceptions.Timeout):
        client(github_server, timeout=1).get_repo("acme/fleet").full_name  # noqa: B018

    # a fault scoped to a method/path leaves everything else alone, and runs out
    github_double.inject("500", 1, method="POST", path=r"/pulls$")
    assert gh.get_repo("acme/fleet").full_name == "acme/fleet"
    assert github_double.faults[0].count == 1
    methods = [(r.method, r.path) for r in github_double.api_calls()]
    assert methods.count(("GET", "/repos/acme/fleet")) == 6


# ------------------------------------------------------------------------------------- App tokens


def test_app_installation_token_needs_a_valid_rs256_jwt(github_server: RunningDouble) -> None:
    double = github_server.double
    private, public = make_app_keypair()
    double.app_id, double.app_public_key = "12345", public

    def integration(app_id: str, key: str) -> GithubIntegration:
        return GithubIntegration(
            auth=Auth.AppAuth(app_id, key),
            base_url=github_server.api_url,
            retry=None,
            seconds_between_requests=0,
            seconds_between_writes=0,
        )

    auth = integration("12345", private).get_access_token(double.installation_id)
    assert auth.token.startswith("ghs_") and auth.expires_at.timestamp() > 0
    assert client(github_server, token=auth.token).get_repo("acme/fleet").full_name == "acme/fleet"

    other_private, _ = make_app_keypair()
    with pytest.raises(GithubException) as exc:
        integration("12345", other_private).get_access_token(double.installation_id)
    assert exc.value.status == 401
    with pytest.raises(GithubException) as exc:
        integration("999", private).get_access_token(double.installation_id)
    assert exc.value.status == 401
    with pytest.raises(UnknownObjectException):
        integration("12345", private).get_access_token(1)

    double.expire_tokens()
    with pytest.raises(BadCredentialsException):
        client(github_server, token=auth.token).get_repo("acme/fleet").full_name  # noqa: B018


def test_installation_tokens_expire_by_the_doubles_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    private, public = make_app_keypair()
    double = GitHubDouble(tmp_path, app_id="1", app_public_key=public, clock=lambda: now[0], token="")
    double.commit_files("main", {"a": "b\n"})
    from tests.doubles.github import serve_in_thread

    with serve_in_thread(double) as running:
        response = requests.post(
            f"{running.api_url}/app/installations/{double.installation_id}/access_tokens",
            headers={"Authorization": f"Bearer {Auth.AppAuth('1', private).create_jwt()}"},
            timeout=10,
        )
        assert response.status_code == 201
        token = response.json()["token"]
        assert client(running, token=token).get_repo("acme/fleet").name == "fleet"
        now[0] += 3601
        with pytest.raises(BadCredentialsException):
            client(running, token=token).get_repo("acme/fleet").name  # noqa: B018


# ------------------------------------------------------------------------------------- git over HTTP


def _git(*args: str, header: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": "/nonexistent",
    }
    if header:
        env.update(
            {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}
        )
    return subprocess.run(["git", *args], capture_output=True, text=True, env=env, check=False)


def test_smart_http_clone_and_fetch_need_the_token(
    github_server: RunningDouble, github_double: GitHubDouble, tmp_path: Path
) -> None:
    good = "Authorization: Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    bad = "Authorization: Basic " + base64.b64encode(b"x-access-token:ghp_wrong").decode()
    clone = tmp_path / "clone.git"
    done = _git("clone", "--bare", "-q", github_server.git_url, str(clone), header=good)
    assert done.returncode == 0, done.stderr
    assert _git("--git-dir", str(clone), "rev-parse", "main").stdout.strip() == github_double.branch_sha(
        "main"
    )

    moved = github_double.commit_files("main", {"README.md": "moved\n"})
    fetched = _git(
        "--git-dir", str(clone), "fetch", "-q", "origin", "+refs/heads/*:refs/heads/*", header=good
    )
    assert fetched.returncode == 0, fetched.stderr
    assert _git("--git-dir", str(clone), "rev-parse", "main").stdout.strip() == moved

    refused = _git("clone", "--bare", "-q", github_server.git_url, str(tmp_path / "no.git"), header=bad)
    assert refused.returncode != 0
    anonymous = _git("clone", "--bare", "-q", github_server.git_url, str(tmp_path / "anon.git"))
    assert anonymous.returncode != 0 and "could not read Username" in anonymous.stderr
    raw = requests.get(f"{github_server.git_url}/info/refs?service=git-upload-pack", timeout=10)
    assert raw.status_code == 401 and raw.headers["WWW-Authenticate"].startswith("Basic")


# ------------------------------------------------------------------------------------- webhooks + in-loop


async def test_in_loop_server_pygithub_and_signed_webhooks(tmp_path: Path, aiohttp_server: Any) -> None:
    receiver: list[tuple[str, dict[str, str], bytes]] = []
    double = GitHubDouble(tmp_path / "gh", token=TOKEN, app_id="12345")
    double.commit_files("main", SEED_FILES)
    running = await serve_in_loop(double, aiohttp_server)
    secret = "webhook-secret"

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(secret, body, request.headers.get("X-Hub-Signature-256")):
            return web.Response(status=401)
        receiver.append((request.headers["X-GitHub-Event"], dict(request.headers), body))
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/webhooks/github", hook)
    hook_server = await aiohttp_server(hook_app)
    url = f"http://127.0.0.1:{hook_server.port}/webhooks/github"

    def open_pr() -> int:
        repo = client(running).get_repo("acme/fleet")
        branch_with(repo, double, "opsbot/hook", "hooked\n")
        return int(repo.create_pull(base="main", head="opsbot/hook", title="Hook").number)

    number = await asyncio.to_thread(open_pr)  # blocking PyGithub off the loop that serves the double
    before = double.branch_sha("main")
    assert before
    base = running.api_url

    status, _ = await double.send_webhook_async(
        url, "pull_request", double.pull_request_payload(base, number, "opened"), secret
    )
    assert status == 204
    review = double.add_review(number, "bob", "APPROVED")
    await double.send_webhook_async(
        url, "pull_request_review", double.review_payload(base, number, review.id), secret
    )
    merge_sha = double.merge_by_hand(number, user="bob")
    await double.send_webhook_async(
        url, "pull_request", double.pull_request_payload(base, number, "closed"), secret
    )
    await double.send_webhook_async(
        url, "push", double.push_payload(base, "main", before, merge_sha, "bob"), secret
    )
    forged, _ = await double.send_webhook_async(
        url, "push", double.push_payload(base, "main", before, merge_sha), "wrong"
    )
    assert forged == 401

    events = [parse_event(event, json.loads(body)) for event, _headers, body in receiver]
    assert isinstance(events[0], PrOpened) and events[0].number == number
    assert isinstance(events[1], ReviewApproved) and events[1].reviewer == "bob"
    assert (
        isinstance(events[2], PrMerged) and events[2].merge_sha == merge_sha and events[2].merged_by == "bob"
    )
    assert isinstance(events[3], Push) and (events[3].before, events[3].after) == (before, merge_sha)
    headers = receiver[0][1]
    assert len(headers["X-GitHub-Delivery"]) == 36 and headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert json.loads(receiver[2][2])["installation"]["id"] == double.installation_id
    assert ZERO_SHA not in (events[3].before, events[3].after)


def test_closing_by_hand_gives_an_unmerged_closed_payload(github_server: RunningDouble, repo: Any) -> None:
    double = github_server.double
    branch_with(repo, double, "opsbot/close", "c\n")
    pr = repo.create_pull(base="main", head="opsbot/close", title="c")
    double.close_by_hand(pr.number, user="carol")
    payload = double.pull_request_payload(github_server.api_url, pr.number, "closed")
    assert payload["pull_request"]["merged"] is False and payload["sender"]["login"] == "carol"
    event = parse_event("pull_request", payload)
    assert event is not None and type(event).__name__ == "PrClosed"
