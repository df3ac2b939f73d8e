"""Four-eyes across chat and GitHub: the `users` mapping (Slack id → GitHub login), validated, and
used wherever the requester is compared (a review on GitHub, an approval under another name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.core.model import Actor, RequestState
from opsbot.core.results import Failure, Proposed, RequestUpdate
from opsbot.errors import ConfigError
from opsbot.settings import load_settings
from tests.plugins.slack import fleet_with_config


def test_users_from_the_environment_and_from_the_file(tmp_path: Path) -> None:
    env = load_settings(environ={"OPSBOT_USERS": " U0ALICE=alice-gh , W0BOB=bob,"})
    assert dict(env.users) == {"U0ALICE": "alice-gh", "W0BOB": "bob"}
    assert env.github_login("U0ALICE") == "alice-gh" and env.github_login("U0NOBODY") == ""
    file = tmp_path / "settings.yaml"
    file.write_text("users:\n  U0ALICE: alice-gh\n  U0CAROL: carol\n")
    assert dict(load_settings(environ={}, file=str(file)).users) == {
        "U0ALICE": "alice-gh",
        "U0CAROL": "carol",
    }
    both = load_settings(environ={"OPSBOT_USERS": "U0DAVE=dave"}, file=str(file))
    assert dict(both.users) == {"U0DAVE": "dave"}  # the environment wins over the file, as for every key
    assert dict(load_settings(environ={}).users) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("U0ALICE", "OPSBOT_USERS: 'U0ALICE' is not <slack user id>=<github login>"),
        ("alice=alice-gh", "users: 'alice' is not a Slack user id"),
        ("U0ALICE=-alice", "users.U0ALICE: '-alice' is not a GitHub login"),
        ("U0ALICE=al--ice", "users.U0ALICE: 'al--ice' is not a GitHub login"),
        ("U0ALICE=a,U0ALICE=b", "users: U0ALICE is listed twice"),
        ("U0ALICE=shared,U0BOB=Shared", "users: GitHub login 'Shared' is mapped to both U0ALICE and U0BOB"),
    ],
)
def test_a_wrong_mapping_is_refused_at_start(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"OPSBOT_USERS": value})
    assert str(exc.value).startswith(message)


def test_a_file_mapping_must_be_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text("users: [U0ALICE]\n")
    with pytest.raises(ConfigError, match="users: expected a mapping"):
        load_settings(environ={}, file=str(file))


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Opsbot]:
    repo = fleet_with_config(tmp_path / "fleet")  # production needs 1 approval
    made = Opsbot(load_settings(environ={"OPSBOT_USERS": "U0ALICE=alice-gh,U0BOB=bob-gh"}, repo=str(repo)))
    yield made
    made.close()


def propose(bot: Opsbot) -> Proposed:
    result = bot.handle("scale frontend 5 in production", Actor("U0ALICE", "alice"))
    assert isinstance(result, Proposed) and result.request is not None and result.pr is not None
    return result


def test_the_mapped_requesters_own_review_does_not_count_anothers_does(bot: Opsbot) -> None:
    proposed = propose(bot)
    assert proposed.request is not None and proposed.pr is not None
    rid, number = proposed.request.id, proposed.pr.number
    for login in ("alice-gh", "ALICE-GH", "U0ALICE"):
        assert bot.requests.forge_approved(number, login) is None
    assert bot.store.approvals(rid) == []
    moved = bot.requests.forge_approved(number, "bob-gh")
    assert moved is not None and moved.state is RequestState.APPROVED
    assert [a.approver for a in bot.store.approvals(rid)] == ["bob-gh"]


def test_an_unmapped_reviewer_counts_as_before(bot: Opsbot) -> None:
    proposed = propose(bot)
    assert proposed.pr is not None
    moved = bot.requests.forge_approved(proposed.pr.number, "carol")
    assert moved is not None and moved.state is RequestState.APPROVED


def test_approving_under_the_requesters_github_login_is_refused_in_chat_too(bot: Opsbot) -> None:
    proposed = propose(bot)
    assert proposed.request is not None
    own = bot.handle(f"approve {proposed.request.id}", Actor("alice-gh", source="cli"))
    assert isinstance(own, Failure) and "four-eyes" in own.text()
    other = bot.handle(f"approve {proposed.request.id}", Actor("U0BOB", "bob"))
    assert isinstance(other, RequestUpdate) and other.request is not None
    assert other.request.state is RequestState.APPROVED


def test_the_pr_body_names_the_requester_by_login(bot: Opsbot) -> None:
    proposed = propose(bot)
    assert proposed.pr is not None
    body = bot.forge._db.execute(  # type: ignore[attr-defined]
        "SELECT body FROM prs WHERE number = ?", (proposed.pr.number,)
    ).fetchone()[0]
    assert "Requested by @alice-gh (U0ALICE) · opsbot request R1" in body


def test_same_person_sees_through_both_names(bot: Opsbot) -> None:
    same = bot.requests.same_person
    assert same("U0ALICE", "alice-gh") and same("alice-gh", "U0ALICE") and same("U0ALICE", "Alice-Gh")
    assert same("alice-gh", "ALICE-GH")  # a CLI requester named like her login
    assert not same("U0ALICE", "bob-gh") and not same("U0ALICE", "U0BOB") and not same("U0ALICE", "")
    assert not same("carol", "dave")
