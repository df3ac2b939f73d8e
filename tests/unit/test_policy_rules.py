"""The pure policy rules: cron, durations, windows (time zones, DST), freezes, reverts, config keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from opsbot.errors import CommandError, ConfigError
from opsbot.manifests.config import parse_config
from opsbot.policy.cron import parse_cron
from opsbot.policy.model import Freeze, Window
from opsbot.policy.rules import (
    chat_duration,
    freeze_block,
    parse_duration,
    parse_gate,
    parse_window,
    revert_command,
    when,
    window_block,
)

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND = Window("deny", "0 17 * * 5", timedelta(hours=63), "Europe/Berlin", "weekend freeze")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("spec", "minutes", "hours", "weekdays"),
    [
        ("*/15 * * * *", {0, 15, 30, 45}, set(range(24)), set(range(7))),
        ("0 9-17/4 * * MON-FRI", {0}, {9, 13, 17}, {1, 2, 3, 4, 5}),
        ("30 2 * * 0,7", {30}, {2}, {0}),
        ("5,10 0 * * sun", {5, 10}, {0}, {0}),
    ],
)
def test_cron_fields(spec: str, minutes: set[int], hours: set[int], weekdays: set[int]) -> None:
    cron = parse_cron(spec)
    assert (set(cron.minutes), set(cron.hours), set(cron.weekdays)) == (minutes, hours, weekdays)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("0 17 * *", "has 5 fields"),
        ("60 * * * *", "'60' is not a minute (0-59)"),
        ("0 25 * * *", "'25' is not a hour (0-23)"),
        ("0 0 * * FUNDAY", "'FUNDAY' is not a day of week"),
        ("0 0 5-1 * *", "runs backwards"),
        ("*/0 * * * *", "bad step"),
    ],
)
def test_bad_cron_is_refused_naming_the_field(spec: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_cron(spec)


def test_day_of_month_and_day_of_week_together_mean_either() -> None:
    cron = parse_cron("0 0 1 * 1")  # the 1st, or any Monday (Vixie cron)
    assert cron.day_matches(at("2026-12-01").date())  # a Tuesday, the 1st
    assert cron.day_matches(at("2026-12-07").date())  # a Monday
    assert not cron.day_matches(at("2026-12-08").date())


def test_next_and_last_start_follow_the_zone_across_dst() -> None:
    cron = parse_cron("30 2 * * *")  # 02:30 local: skipped on the spring-forward night
    start = cron.last_start(at("2026-03-29T12:00:00+00:00"), BERLIN, timedelta(hours=24))
    assert start is not None and start.tzinfo is BERLIN
    nxt = cron.next_start(at("2026-10-24T12:00:00+00:00"), BERLIN)
    # 02:30 happens twice on the fall-back night: the window starts at the first one (CEST), as cron does
    assert nxt is not None and nxt.astimezone(UTC) == at("2026-10-25T00:30:00+00:00")


def test_durations() -> None:
    assert parse_duration("63h") == timedelta(hours=63)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "5", "h", "-2h", "0m", "2 hours"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(CommandError, match="longer than a year"):
        chat_duration("400d")


def test_a_deny_window_blocks_inside_and_says_until_when() -> None:
    inside = at("2026-12-04T18:30:00+01:00")  # Friday evening in Berlin
    block = window_block([WEEKEND], inside)
    assert block is not None and block.reason == "weekend freeze"
    assert block.until == at("2026-12-07T08:00:00+01:00")
    assert window_block([WEEKEND], at("2026-12-07T08:00:00+01:00")) is None  # ends exactly then
    assert window_block([WEEKEND], at("2026-12-04T16:59:00+01:00")) is None


def test_allow_windows_permit_only_inside_and_name_the_next_opening() -> None:
    office = Window("allow", "0 9 * * 1-5", timedelta(hours=8), "UTC", "office hours")
    assert window_block([office], at("2026-12-03T10:00:00+00:00")) is None
    outside = window_block([office], at("2026-12-05T10:00:00+00:00"))  # Saturday
    assert outside is not None and outside.until == at("2026-12-07T09:00:00+00:00")
    # a deny window inside an allow window still wins
    lunch = Window("deny", "0 12 * * *", timedelta(hours=1), "UTC", "lunch")
    assert window_block([office, lunch], at("2026-12-03T12:30:00+00:00")) is not None


def test_the_longest_active_freeze_is_the_one_told() -> None:
    now = at("2026-12-03T12:00:00+00:00")
    short = Freeze(1, "prod", "U1", "a", now, now + timedelta(hours=1))
    forever = Freeze(2, "prod", "U2", "b", now, None)
    lifted = Freeze(3, "prod", "U3", "c", now, None, lifted_at=now)
    block = freeze_block([short, forever, lifted], now + timedelta(minutes=1))
    assert block is not None and block.who == "U2" and block.until is None
    assert freeze_block([lifted], now) is None
    assert when(None, now) == "until someone unfreezes it"
    assert when(now + timedelta(days=1, minutes=5), now) == "until 2026-12-04 12:05 UTC (in 1d 5m)"


def test_window_and_gate_config_errors_name_the_key() -> None:
    where = "environments.production.windows[0]"
    cases = [
        ({"kind": "maybe", "schedule": "0 1 * * *", "duration": "1h"}, ".kind: expected deny or allow"),
        ({"kind": "deny", "duration": "1h"}, ".schedule: a cron schedule is needed"),
        ({"kind": "deny", "schedule": "0 1 * * *", "duration": "soon"}, ".duration:"),
        ({"kind": "deny", "schedule": "0 1 * * *", "duration": "1h", "timezone": "Mars/Olympus"}, "IANA"),
        ({"kind": "deny", "schedule": "0 0 31 2 *", "duration": "1h"}, "never starts"),
        ({"kind": "deny", "schedule": "0 1 * * *", "duration": "1h", "zone": "UTC"}, "unknown key 'zone'"),
    ]
    for raw, error in cases:
        with pytest.raises(ConfigError) as exc:
            parse_window(raw, where)
        assert str(exc.value).startswith(where) and error in str(exc.value), str(exc.value)
    with pytest.raises(ConfigError, match="for: expected promote or all"):
        parse_gate({"name": "x", "prometheus": "up", "for": "always"}, "g")
    with pytest.raises(ConfigError, match="prometheus: a PromQL expression is needed"):
        parse_gate({"name": "x"}, "g")
    with pytest.raises(ConfigError, match="auto_revert: expected true or false"):
        parse_config("environments:\n  prod: {path: p, auto_revert: 'yes please'}\n")
    with pytest.raises(ConfigError, match="windows: expected a list"):
        parse_config("environments:\n  prod: {path: p, windows: {kind: deny}}\n")
    cfg = parse_config(
        "environments:\n  prod:\n    path: p\n    auto_revert: true\n"
        "    windows: [{kind: deny, schedule: '0 17 * * 5', duration: 63h, timezone: Europe/Berlin}]\n"
        "    gates: [{name: p99, prometheus: 'up == 1', for: all}]\n"
    )
    env = cfg.envs["prod"]
    assert env.auto_revert and env.windows[0].duration == timedelta(hours=63) and env.gates[0].applies_to == "all"


@pytest.mark.parametrize(
    ("verb", "fields", "command"),
    [
        ("scale", [{"app": "web", "field": "replicas", "old": "3", "new": "5"}], "scale web 3 in prod"),
        ("scale", [{"app": "web", "field": "autoscaling", "old": "2-10", "new": "4-20"}], "scale web 2-10 in prod"),
        ("scale", [{"app": "web", "field": "replicas", "old": None, "new": "5"}], None),
        ("deploy", [{"app": "web", "field": "image tag", "old": "1.0", "new": "1.1"}], "rollback web in prod"),
        ("promote", [{"app": "web", "field": "image web", "old": "r/web:1", "new": "r/web:2"}], "rollback web in prod"),
        ("rollback", [{"app": "web", "field": "chart version", "old": "1", "new": "2"}], "rollback web in prod"),
        ("create-cluster", [{"app": "c1", "field": "cluster", "old": None, "new": "x"}], None),
    ],
)
def test_the_revert_of_a_request_is_derived_from_what_it_changed(
    verb: str, fields: list[dict[str, object]], command: str | None
) -> None:
    assert revert_command(verb, "web", "prod", fields) == command


def test_back_to_back_occurrences_are_one_run_and_its_end_is_told() -> None:
    twice = Window("deny", "0 9 * * 1,2", timedelta(hours=30), "UTC", "release train")
    block = window_block([twice], at("2026-12-07T10:00:00+00:00"))  # Monday: runs into Tuesday's start
    assert block is not None and block.until == at("2026-12-09T15:00:00+00:00")  # Wednesday 15:00
    endless = Window("deny", "0 0 * * *", timedelta(hours=24), "UTC", "")  # each day starts as the last ends
    found = window_block([endless], at("2026-12-07T10:00:00+00:00"))
    assert found is not None and found.until is None  # no false end time


def test_policy_posts_escape_what_people_typed_and_keep_real_mentions() -> None:
    from opsbot.chat.blocks import policy_notice, thread_reply

    text = "❄️ production is frozen by <@U0CAROL> because <!channel> & <https://evil.example|click>"
    rendered = policy_notice(text)
    assert rendered["text"].startswith("❄️ production is frozen by <@U0CAROL> because &lt;!channel&gt; &amp; ")
    assert "<https://evil" not in rendered["text"]
    assert thread_reply("policy", text=text, by="U0CAROL", key="k")["text"] == rendered["text"]
