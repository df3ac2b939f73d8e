"""Policies as chat transcripts on the console transport (real git, real SQLite, injected clock):
freezes and windows block merges, not proposals; locks refuse others' proposals; overrides need the
role; every step is an audit row. Commit statuses are read back from the local forge."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsbot.app import Opsbot
from opsbot.chat.console import Console
from opsbot.core.model import RequestState
from opsbot.core.results import Failure, Info, Proposed, RequestUpdate
from opsbot.settings import RbacSettings, Role, load_settings

#: Thursday 3 December 2026, 12:00 UTC (13:00 in Berlin).
THURSDAY = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
#: Friday 4 December 2026, 18:00 in Berlin: inside the weekend deny window.
FRIDAY_EVENING = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)

CONFIG = """\
environments:
  dev: {path: overlays/dev}
  staging: {path: overlays/staging, promote_from: dev}
  production:
    path: overlays/production
    promote_from: staging
    approvals: 1
    windows:
      - kind: deny
        schedule: "0 17 * * 5"
        duration: 63h
        timezone: Europe/Berlin
        reason: weekend freeze
"""

RBAC = RbacSettings(
    roles=(
        Role("team", frozenset({"*"}), frozenset({"*"})),
        Role("release-manager", frozenset({"override"}), frozenset({"production"})),
    ),
    members={"team": ("alice", "bob", "carol", "oscar"), "release-manager": ("oscar",)},
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_bot(fleet: Path, config: str = CONFIG) -> tuple[Console, Clock]:
    (fleet / ".opsbot.yaml").write_text(config)
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "pin config with policies")
    console = Console(Opsbot(load_settings(environ={}, repo=str(fleet), rbac=RBAC)), out=io.StringIO())
    clock = Clock(THURSDAY)
    console.bot.policies.clock = clock
    return console, clock


@pytest.fixture
def chat(fleet: Path) -> Iterator[tuple[Console, Clock]]:
    console, clock = make_bot(fleet)
    yield console, clock
    console.bot.close()


def approved_request(bot: Console, command: str = "scale frontend 5 in production") -> str:
    r = bot.say(command, user="alice")
    assert isinstance(r, Proposed) and r.request, r.text()
    ok = bot.say(f"approve {r.request.id}", user="bob")
    assert isinstance(ok, RequestUpdate) and ok.request and ok.request.state is RequestState.APPROVED
    return r.request.id


def policy_status(bot: Console, request_id: str, context: str = "opsbot/policy") -> tuple[str, str]:
    req = bot.bot.store.get_request(request_id)
    assert req is not None
    return bot.bot.forge.statuses(req.head_sha)[context]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------- freezes


def test_a_freeze_that_starts_while_a_pr_is_approved_blocks_its_merge_until_it_ends(
    chat: tuple[Console, Clock],
) -> None:
    bot, clock = chat
    rid = approved_request(bot)
    assert policy_status(bot, rid) == ("success", "No window or freeze blocks merges to production")

    frozen = bot.say("freeze production for 2h because release of the billing service", user="carol")
    assert isinstance(frozen, Info), frozen.text()
    assert "production is frozen by <@carol> because release of the billing service" in frozen.text()
    assert "until 2026-12-03 14:00 UTC (in 2h)" in frozen.text()
    # the approved PR now carries a failing status, and its thread was told once
    assert policy_status(bot, rid) == ("failure", "production frozen by carol: release of the billing service")
    told = [line for line in bot.transcript if line.startswith(f"  ↳ thread {rid}: 🛡️ ❄️")]
    assert len(told) == 1 and "@carol" in told[0]

    blocked = bot.say(f"merge {rid}", user="bob")
    assert isinstance(blocked, Failure)
    assert blocked.text().startswith(f"{rid} cannot merge now. production is frozen by <@carol> because release")
    assert "until 2026-12-03 14:00 UTC (in 2h)" in blocked.text()
    assert bot.bot.store.get_request(rid).state is RequestState.APPROVED  # type: ignore[union-attr]
    assert git(Path(bot.bot.repo.path), "log", "--merges", "--format=%H", "main") == ""

    # proposals and approvals go on while frozen
    other = bot.say("scale frontend 3 in staging", user="alice")
    assert isinstance(other, Proposed)

    clock.now = THURSDAY + timedelta(hours=2, minutes=1)  # the freeze ran out
    assert bot.bot.policies.tick() >= 1
    assert policy_status(bot, rid)[0] == "success"
    merged = bot.say(f"merge {rid}", user="bob")
    assert isinstance(merged, RequestUpdate) and merged.request.state is RequestState.MERGED  # type: ignore[union-attr]


def test_unfreeze_lifts_an_open_ended_freeze_and_says_so_everywhere(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    rid = approved_request(bot)
    bot.say("freeze production", user="carol")
    blocked = bot.say(f"merge {rid}", user="bob")
    assert isinstance(blocked, Failure) and "until someone unfreezes it" in blocked.text()
    lifted = bot.say("unfreeze production", user="bob")
    assert isinstance(lifted, Info) and "production was unfrozen by <@bob>" in lifted.text()
    assert policy_status(bot, rid)[0] == "success"
    assert any(line.startswith(f"  ↳ thread {rid}: 🛡️ ☀️") for line in bot.transcript)
    again = bot.say("unfreeze production", user="bob")
    assert isinstance(again, Failure) and again.text().startswith("production is not frozen.")
    assert isinstance(bot.say(f"merge {rid}", user="bob"), RequestUpdate)


def test_override_needs_the_role_a_reason_and_is_audited(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    rid = approved_request(bot)
    bot.say("freeze production because incident 4711", user="carol")

    no_reason = bot.say(f"merge {rid} override", user="oscar")
    assert isinstance(no_reason, Failure) and "An override needs a reason" in no_reason.text()
    denied = bot.say(f"merge {rid} override because the fix is urgent", user="bob")
    assert isinstance(denied, Failure) and denied.denied
    assert "needs a role that lists `override`" in denied.text()
    assert bot.bot.store.get_request(rid).state is RequestState.APPROVED  # type: ignore[union-attr]

    done = bot.say(f"merge {rid} override because hotfix for incident 4711", user="oscar")
    assert isinstance(done, RequestUpdate) and done.request.state is RequestState.MERGED, done.text()  # type: ignore[union-attr]
    assert "<@oscar> overrode policies" in done.text()
    assert any("🛡️ ⚠️ @oscar overrode policies" in line for line in bot.transcript)
    rows = [(r.action, r.actor, r.reason) for r in bot.bot.store.audit_list(request_id=rid)]
    assert ("blocked", "bob", "the fix is urgent") in rows
    assert rows[-2][:2] == ("merged", "oscar")  # the override is recorded once the merge went through
    assert rows[-1] == ("override", "oscar", "hotfix for incident 4711")


# --------------------------------------------------------------------------------------------- windows


def test_a_deny_window_blocks_merges_inside_it_only(chat: tuple[Console, Clock]) -> None:
    bot, clock = chat
    rid = approved_request(bot)
    clock.now = FRIDAY_EVENING
    bot.bot.policies.tick()
    assert policy_status(bot, rid) == ("failure", 'deny window "0 17 * * 5" for 63h (Europe/Berlin): weekend freeze')
    blocked = bot.say(f"merge {rid}", user="bob")
    assert isinstance(blocked, Failure)
    assert 'blocked by the deny window "0 17 * * 5" for 63h (Europe/Berlin) (weekend freeze)' in blocked.text()
    # Friday 17:00 Berlin + 63h = Monday 08:00 Berlin = 07:00 UTC
    assert "set in .opsbot.yaml, until 2026-12-07 07:00 UTC (in 2d 14h)" in blocked.text()
    clock.now = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    assert isinstance(bot.say(f"merge {rid}", user="bob"), RequestUpdate)


def test_with_an_allow_window_merges_happen_only_inside_one(fleet: Path) -> None:
    config = CONFIG.replace(
        '      - kind: deny\n        schedule: "0 17 * * 5"\n        duration: 63h\n        timezone: Europe/Berlin\n'
        "        reason: weekend freeze\n",
        '      - kind: allow\n        schedule: "0 9 * * 1-4"\n        duration: 8h\n        timezone: UTC\n'
        "        reason: office hours\n",
    )
    bot, clock = make_bot(fleet, config)
    try:
        clock.now = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)  # Thursday evening
        rid = approved_request(bot)
        blocked = bot.say(f"merge {rid}", user="bob")
        assert isinstance(blocked, Failure)
        assert "outside every allow window" in blocked.text() and "office hours" in blocked.text()
        assert "until 2026-12-07 09:00 UTC" in blocked.text()  # next Monday 09:00
        clock.now = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
        assert isinstance(bot.say(f"merge {rid}", user="bob"), RequestUpdate)
    finally:
        bot.bot.close()


# --------------------------------------------------------------------------------------------- locks


def test_a_lock_refuses_others_proposals_and_lets_the_holder_go_ahead(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    mine = bot.say("scale frontend 4 in staging", user="alice")
    assert isinstance(mine, Proposed)
    took = bot.say("lock frontend in staging because load test until 3pm", user="alice")
    assert isinstance(took, Info) and "frontend in staging is locked by <@alice> because load test" in took.text()
    again = bot.say("lock frontend in staging", user="alice")
    assert "You already hold the lock" in again.text()

    refused = bot.say("scale frontend 7 in staging", user="bob")
    assert isinstance(refused, Failure)
    assert refused.text().startswith(
        "frontend in staging is locked by <@alice> because load test until 3pm, since 2026-12-03 12:00 UTC."
    )
    assert "Ask them to `unlock frontend in staging` when done." in refused.text()
    assert len(bot.bot.forge.list_prs()) == 1  # nothing was opened for bob
    steal = bot.say("lock frontend in staging", user="bob")
    assert isinstance(steal, Failure) and "locked by <@alice>" in steal.text()

    own = bot.say("scale frontend 6 in staging", user="alice")
    assert isinstance(own, Proposed)
    elsewhere = bot.say("scale frontend 3 in dev", user="bob")  # other envs are not locked
    assert isinstance(elsewhere, Proposed)

    listed = bot.say("policies staging", user="bob")
    assert isinstance(listed, Info)
    assert any("lock of frontend by <@alice> because load test until 3pm" in line and "source chat" in line
               for line in listed.lines)  # fmt: skip

    taken = bot.say("unlock frontend in staging", user="bob")  # not bob's lock, and no override role
    assert isinstance(taken, Failure) and taken.denied
    assert "locked by <@alice>; only they, or someone with a role that lists `override`" in taken.text()
    freed = bot.say("unlock frontend in staging", user="alice")
    assert isinstance(freed, Info) and "unlocked by <@alice>" in freed.text()
    assert isinstance(bot.say("scale frontend 7 in staging", user="bob"), Proposed)
    assert [r.action for r in bot.bot.store.audit_list(env="staging") if r.action in ("lock", "unlock")] == [
        "lock", "unlock",
    ]  # fmt: skip


def test_policies_lists_windows_freezes_locks_and_gates_with_their_sources(fleet: Path) -> None:
    config = CONFIG + (
        "    gates:\n"
        "      - name: p99 latency in staging\n"
        "        prometheus: 'histogram_quantile(0.99, rate(x[5m])) < 0.1'\n"
        "        for: promote\n"
        "    auto_revert: true\n"
    )
    bot, _ = make_bot(fleet, config)
    try:
        bot.say("freeze production for 30m because db migration", user="carol")
        bot.say("lock api in production because canary", user="alice")
        r = bot.say("policies production", user="dave")  # read-only: no role needed
        assert isinstance(r, Info), r.text()
        text = r.text()
        assert 'production · deny window "0 17 * * 5" for 63h (Europe/Berlin) — weekend freeze · next from 2026-12-04 17:00 CET · source .opsbot.yaml' in text
        assert "production · gate p99 latency in staging (promote)" in text
        assert "auto_revert" in text
        assert "production · freeze by <@carol> because db migration, until 2026-12-03 12:30 UTC (in 30m) · source chat" in text
        assert "production · lock of api by <@alice> because canary" in text
        empty = bot.say("policies dev", user="dave")
        assert empty.text().endswith("No windows, freezes, locks or gates in force in dev.")
        assert isinstance(bot.say("policies prodution"), Failure)
    finally:
        bot.bot.close()


# --------------------------------------------------------------------------------------------- audit


def test_audit_answers_in_chat_with_every_step(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    rid = approved_request(bot)
    assert isinstance(bot.say(f"merge {rid}", user="bob"), RequestUpdate)
    r = bot.say("audit frontend in production", user="carol")
    assert isinstance(r, Info)
    actions = [row["action"] for row in r.data["rows"]]
    assert actions == ["proposed", "opened", "approval", "approved", "merged"]
    assert [row["actor"] for row in r.data["rows"]] == ["alice", "alice", "bob", "bob", "bob"]
    assert all(row["request"] == rid for row in r.data["rows"])
    assert [row["pr"] for row in r.data["rows"]] == [None, 1, 1, 1, 1]  # the PR is opened after the proposal
    assert "proposed   by alice · R1 · frontend in production · scale frontend 5 in production" in r.text()
    assert bot.say("audit api", user="carol").text().endswith("No audit rows match.")
    future = bot.say("audit since 2999-01-01", user="carol")
    assert future.text().endswith("No audit rows match.")


BAD = [
    ("freeze", "Say which environment."),
    ("freeze prodution", 'Unknown environment "prodution". Did you mean "production"?'),
    ("freeze production for banana", '"banana" is not a duration (like 30m, 2h, 1h30m, 3d).'),
    ("freeze production for 2y", '"2y" is not a duration'),
    ("freeze production because", "`because` needs a reason after it."),
    ("freeze production to staging", '"to" does not go with freeze.'),
    ("lock frontend", "Say which environment: `in <env>`."),
    ("unlock frontend in staging", "frontend in staging is not locked."),
    ("lock fronted in staging", 'Unknown app "fronted" in staging. Did you mean "frontend"?'),
    ("merge R1 because why not", "A reason goes with an override"),
    ("merge R1 now", 'Unexpected "now".'),
    ("audit since 12/01/2026", '"12/01/2026" is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM.'),
    ("audit web api", 'Unexpected "api".'),
    ("policies production staging", 'Unexpected "staging".'),
]


@pytest.mark.parametrize(("command", "message"), BAD, ids=[c for c, _ in BAD])
def test_bad_policy_input_gets_one_clear_line_and_changes_nothing(
    chat: tuple[Console, Clock], command: str, message: str
) -> None:
    bot, _ = chat
    before = len(bot.bot.store.audit_list())
    r = bot.say(command, user="alice")
    assert isinstance(r, Failure) and message in r.text() and "\n" not in r.text()
    assert len(bot.bot.store.audit_list()) == before
    assert bot.bot.store.freezes_active(THURSDAY) == [] and bot.bot.store.locks_active() == []


@pytest.mark.parametrize(
    ("topic", "usage"),
    [
        ("freeze", "freeze <env> [for <duration>] [because <reason>]"),
        ("unfreeze", "unfreeze <env>"),
        ("lock", "lock <app> in <env> [because <reason>]"),
        ("unlock", "unlock <app> in <env>"),
        ("policies", "policies [<env>]"),
        ("audit", "audit [<app>] [in <env>] [since <date>]"),
        ("merge", "merge <request> [override because <reason>]"),
    ],
)
def test_help_shows_each_policy_command(chat: tuple[Console, Clock], topic: str, usage: str) -> None:
    bot, _ = chat
    r = bot.say(f"help {topic}", user="dave")
    assert isinstance(r, Info) and r.title == usage
    assert usage in bot.say("help", user="dave").text()


def test_someone_with_the_override_role_may_break_a_lock_and_it_is_audited(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    bot.say("lock api in production because canary", user="alice")
    broken = bot.say("unlock api in production", user="oscar")
    assert isinstance(broken, Info) and "unlocked by <@oscar> (it was held by <@alice>)" in broken.text()
    rows = [(r.action, r.actor, r.detail) for r in bot.bot.store.audit_list(app="api")]
    assert rows == [("lock", "alice", ""), ("unlock", "oscar", "held by alice")]


@pytest.mark.postgres
def test_the_freeze_lock_and_audit_story_on_postgresql(fleet: Path, pg_db_url: str) -> None:
    (fleet / ".opsbot.yaml").write_text(CONFIG)
    git(fleet, "add", ".opsbot.yaml")
    git(fleet, "commit", "-qm", "pin config with policies")
    bot = Console(Opsbot(load_settings(environ={}, repo=str(fleet), rbac=RBAC, database_url=pg_db_url)),
                  out=io.StringIO())  # fmt: skip
    bot.bot.policies.clock = Clock(THURSDAY)
    try:
        rid = approved_request(bot)
        bot.say("freeze production for 1h because db failover drill", user="carol")
        assert isinstance(bot.say(f"merge {rid}", user="bob"), Failure)
        bot.say("unfreeze production", user="carol")
        bot.say("lock cache in production", user="alice")
        assert isinstance(bot.say("scale cache 3 in production", user="bob"), Failure)
        assert isinstance(bot.say(f"merge {rid}", user="bob"), RequestUpdate)
        rows = bot.bot.store.audit_list(env="production")
        assert [r.action for r in rows] == [
            "proposed", "opened", "approval", "approved", "freeze", "blocked", "unfreeze", "lock", "merged",
        ]  # fmt: skip
    finally:
        bot.bot.close()


def test_an_override_is_recorded_only_when_the_merge_happens(chat: tuple[Console, Clock]) -> None:
    bot, _ = chat
    r = bot.say("scale frontend 5 in production", user="alice")
    assert isinstance(r, Proposed) and r.request
    bot.say("freeze production", user="carol")
    early = bot.say(f"merge {r.request.id} override because hotfix", user="oscar")  # not approved yet
    assert isinstance(early, Failure) and "needs 1 approval(s)" in early.text()
    assert "override" not in [row.action for row in bot.bot.store.audit_list(request_id=r.request.id)]
    assert not any("overrode" in line for line in bot.transcript if line.startswith("  ↳"))
