"""GitHub webhook signature checks and event parsing, on payloads in GitHub's documented shapes."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from opsbot.intake.github import (
    PrClosed,
    PrMerged,
    PrOpened,
    PrSynchronized,
    Push,
    ReviewApproved,
    parse_event,
    verify_signature,
)

PAYLOADS = Path(__file__).parent.parent / "fixtures" / "payloads" / "github"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------- signatures


def test_documented_test_vector_verifies() -> None:
    # github/docs validating-webhook-deliveries.md
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_signature("It's a Secret to Everybody", b"Hello, World!", header)


def test_signature_over_the_raw_body_of_a_real_payload() -> None:
    body = (PAYLOADS / "pull_request.closed.merged.json").read_bytes()
    assert verify_signature("s3cret", body, sign("s3cret", body))


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        ("s3cret", b"{}", None),  # missing header
        ("s3cret", b"{}", ""),
        ("s3cret", b"{}", sign("other", b"{}")),  # wrong secret
        ("s3cret", b"{} ", sign("s3cret", b"{}")),  # body changed by one byte
        ("s3cret", b"{}", sign("s3cret", b"{}").replace("sha256=", "sha1=")),  # legacy / wrong algorithm
        ("s3cret", b"{}", sign("s3cret", b"{}")[len("sha256=") :]),  # no prefix
        ("s3cret", b"{}", "sha256=" + "z" * 64),
        ("s3cret", b"{}", "sha256=é"),  # non-ASCII must not raise
        ("", b"{}", sign("", b"{}")),  # an unset secret never verifies
    ],
)
def test_bad_signatures_are_refused(secret: str, body: bytes, header: str | None) -> None:
    assert verify_signature(secret, body, header) is False


# ------------------------------------------------------------------------------------- events


def test_pull_request_opened() -> None:
    event = parse_event("pull_request", load("pull_request.opened.json"))
    assert isinstance(event, PrOpened)
    assert event.number == 1
    assert event.branch == "opsbot/scale-web-production-3f2a9c1d0e"
    assert event.base == "main"
    assert event.title == "Scale web to 3 replicas in production"
    assert event.author == "opsbot[bot]"
    assert event.url == "https://github.example.com/acme/fleet/pull/1"
    assert len(event.head_sha) == 40
    assert event.repository == "acme/fleet"


def test_pull_request_closed_and_merged() -> None:
    payload = load("pull_request.closed.merged.json")
    event = parse_event("pull_request", payload)
    assert isinstance(event, PrMerged)
    assert event.number == 1
    assert event.merge_sha == payload["pull_request"]["merge_commit_sha"]
    assert len(event.merge_sha) == 40
    assert event.branch == "opsbot/scale-web-production-3f2a9c1d0e"
    assert event.base == "main"
    assert event.author == "opsbot[bot]"
    assert event.merged_by == "bob"
    assert event.url.endswith("/pull/1")


def test_pull_request_closed_without_merge_is_not_a_merge_even_with_a_merge_commit_sha() -> None:
    payload = load("pull_request.closed.unmerged.json")
    assert payload["pull_request"]["merge_commit_sha"]  # GitHub keeps the test-merge SHA
    event = parse_event("pull_request", payload)
    assert event == PrClosed(
        number=2, branch="opsbot/scale-cache-staging-0a1b2c3d4e", closed_by="carol", repository="acme/fleet"
    )


def test_review_approved() -> None:
    event = parse_event("pull_request_review", load("pull_request_review.submitted.approved.json"))
    assert isinstance(event, ReviewApproved)
    assert (event.number, event.reviewer) == (1, "bob")
    assert event.branch == "opsbot/scale-web-production-3f2a9c1d0e"
    assert len(event.commit_sha) == 40


def test_review_that_is_not_an_approval_is_ignored() -> None:
    assert parse_event("pull_request_review", load("pull_request_review.submitted.commented.json")) is None
    payload = load("pull_request_review.submitted.approved.json")
    payload["action"] = "dismissed"
    assert parse_event("pull_request_review", payload) is None


def test_pull_request_actions_opsbot_does_not_act_on_are_none() -> None:
    payload = load("pull_request.synchronize.json")
    for action in ("edited", "labeled", "review_requested", "converted_to_draft"):
        assert parse_event("pull_request", {**payload, "action": action}) is None


def test_synchronize_names_the_new_head_and_who_pushed() -> None:
    payload = load("pull_request.synchronize.json")
    event = parse_event("pull_request", payload)
    head = payload["pull_request"]["head"]["sha"]
    assert event == PrSynchronized(number=1, branch="opsbot/scale-web-production-3f2a9c1d0e", before="",
                                   after=head, pusher="opsbot[bot]", repository="acme/fleet")
    # GitHub's own payload carries before/after at the top: those win over the PR object
    payload.update(before="a" * 40, after="b" * 40, sender={"login": "dave"})
    event = parse_event("pull_request", payload)
    assert isinstance(event, PrSynchronized) and (event.before, event.after, event.pusher) == (
        "a" * 40, "b" * 40, "dave")


def test_push() -> None:
    payload = load("push.main.json")
    event = parse_event("push", payload)
    assert event == Push(
        ref="refs/heads/main",
        before=payload["before"],
        after=payload["after"],
        pusher="bob",
        repository="acme/fleet",
    )


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("ping", "ping.json"),
        ("issues", "pull_request.opened.json"),  # unknown event name, whatever the body
    ],
)
def test_other_events_and_actions_are_none(event: str, name: str) -> None:
    assert parse_event(event, load(name)) is None


def test_merged_without_a_merge_sha_is_not_trusted() -> None:
    payload = load("pull_request.closed.merged.json")
    payload["pull_request"]["merge_commit_sha"] = None
    assert parse_event("pull_request", payload) is None


def _mutations(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Payloads with one key removed or replaced by a wrong type, at every depth up to 2."""
    out = []
    for key in list(payload):
        for replacement in (None, 7, "x", [], {}):
            broken = copy.deepcopy(payload)
            broken[key] = replacement
            out.append(broken)
        broken = copy.deepcopy(payload)
        del broken[key]
        out.append(broken)
        if isinstance(payload[key], dict):
            for inner in list(payload[key]):
                for replacement in (None, 7, [], {}):
                    broken = copy.deepcopy(payload)
                    broken[key][inner] = replacement
                    out.append(broken)
    return out


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("pull_request", "pull_request.closed.merged.json"),
        ("pull_request", "pull_request.opened.json"),
        ("pull_request_review", "pull_request_review.submitted.approved.json"),
        ("push", "push.main.json"),
    ],
)
def test_malformed_payloads_never_raise(event: str, name: str) -> None:
    for broken in _mutations(load(name)):
        parse_event(event, broken)  # returns an event or None; never raises
    assert parse_event(event, []) is None  # type: ignore[arg-type]
    assert parse_event(event, {}) is None
