"""Pure policy rules: given the config, the state and a time, what blocks a merge now, and until when.

No I/O and no clock of its own: the caller passes `now`, so tests set the time and no test ever waits
for a real window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opsbot.errors import CommandError, ConfigError
from opsbot.policy.cron import HORIZON_DAYS, parse_cron
from opsbot.policy.model import Block, Freeze, Gate, Window

_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)", re.I)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """`63h`, `1h30m`, `2d`, `90m` (Argo CD's and Go's spelling); ValueError when it is none of these."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if not cleaned or _DURATION.sub("", cleaned) != "":
        raise ValueError(f'"{text}" is not a duration (like 30m, 2h, 1h30m, 3d)')
    seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _DURATION.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f'"{text}" is not a duration longer than zero')
    return timedelta(seconds=seconds)


def chat_duration(text: str) -> timedelta:
    """A duration typed in chat (`freeze production for 2h`): a CommandError on bad input."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise CommandError(f"{exc}.") from None
    if value > timedelta(days=HORIZON_DAYS):
        raise CommandError(f'"{text}" is longer than a year; freeze without `for` and unfreeze by hand.')
    return value


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f'timezone "{name}" is not an IANA time zone (like Europe/Berlin or UTC)') from None


def parse_window(raw: object, where: str) -> Window:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with kind, schedule and duration")
    known = {"kind", "schedule", "duration", "timezone", "reason"}
    bad = set(raw) - known
    if bad:
        raise ConfigError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(known))})")
    kind = str(raw.get("kind", "")).lower()
    if kind not in ("deny", "allow"):
        raise ConfigError(f"{where}.kind: expected deny or allow")
    if not raw.get("schedule"):
        raise ConfigError(f"{where}.schedule: a cron schedule is needed (like \"0 17 * * 5\")")
    try:
        cron = parse_cron(str(raw["schedule"]))
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    try:
        duration = parse_duration(str(raw.get("duration", "")))
    except ValueError as exc:
        raise ConfigError(f"{where}.duration: {exc}") from None
    if duration > timedelta(days=HORIZON_DAYS):
        raise ConfigError(f"{where}.duration: at most a year")
    tz_name = str(raw.get("timezone") or "UTC")
    try:
        tz = zone(tz_name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    if cron.next_start(datetime(2000, 1, 1, tzinfo=tz), tz) is None and cron.next_start(
        datetime(2003, 1, 1, tzinfo=tz), tz
    ) is None:
        raise ConfigError(f'{where}.schedule: "{cron.text}" never starts')
    return Window(kind, cron.text, duration, tz_name, str(raw.get("reason") or ""))


#: How many back-to-back occurrences `window_interval` follows to find where a run of them ends.
MAX_CHAIN = 50


def window_interval(window: Window, now: datetime) -> tuple[datetime, datetime | None] | None:
    """The run of `window` in force at `now` as (start, end), or None when none is.

    Occurrences that start before the previous one ends (or as it ends) make one run: the end told
    to people is the end of the run, not of the current occurrence. `end` is None when the run goes
    on past MAX_CHAIN occurrences (e.g. an hour-long window that starts every minute): opsbot then
    says it has no end in reach rather than a time that is not true.
    """
    tz = zone(window.timezone)
    cron = parse_cron(window.schedule)
    start = cron.last_start(now, tz, window.duration)
    if start is None:
        return None
    end = start + window.duration
    after = start
    for _ in range(MAX_CHAIN):
        following = cron.next_start(after, tz)
        if following is None or following > end:
            return start, end
        end = max(end, following + window.duration)
        after = following
    return start, None


def next_opening(window: Window, now: datetime) -> datetime | None:
    return parse_cron(window.schedule).next_start(now, zone(window.timezone))


def describe_window(window: Window) -> str:
    hours = window.duration.total_seconds() / 3600
    length = f"{hours:g}h" if hours >= 1 else f"{window.duration.total_seconds() / 60:g}m"
    return f'{window.kind} window "{window.schedule}" for {length} ({window.timezone})'


def window_block(windows: Sequence[Window], now: datetime) -> Block | None:
    """A deny window in force, or (with any allow window) being outside all of them, blocks."""
    for w in windows:
        if w.kind != "deny":
            continue
        interval = window_interval(w, now)
        if interval is not None:
            return Block("window", describe_window(w), who=".opsbot.yaml", reason=w.reason, until=interval[1])
    allows = [w for w in windows if w.kind == "allow"]
    if not allows:
        return None
    if any(window_interval(w, now) is not None for w in allows):
        return None
    openings = [t for t in (next_opening(w, now) for w in allows) if t is not None]
    first = min(openings) if openings else None
    reasons = "; ".join(w.reason for w in allows if w.reason)
    return Block(
        "window",
        "outside every allow window (" + ", ".join(describe_window(w) for w in allows) + ")",
        who=".opsbot.yaml",
        reason=reasons,
        until=first,
    )


def freeze_block(freezes: Iterable[Freeze], now: datetime) -> Block | None:
    active = [f for f in freezes if f.active(now)]
    if not active:
        return None
    # The one that lasts longest is what the person waits for; an open-ended one outlasts all.
    f = max(active, key=lambda x: (x.ends_at is None, x.ends_at or now))
    return Block("freeze", f"freeze of {f.env}", who=f.set_by, reason=f.reason, until=f.ends_at)


def when(at: datetime | None, now: datetime) -> str:
    """`until 2026-12-04 17:00 UTC (in 3h 10m)` or `until someone unfreezes it`."""
    if at is None:
        return "until someone unfreezes it"
    left = at - now
    minutes = max(0, int(left.total_seconds() // 60))
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    span = " ".join(
        p for p in (f"{days}d" if days else "", f"{hours}h" if hours else "", f"{mins}m" if mins else "") if p
    ) or "under a minute"
    return f"until {at.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M} UTC (in {span})"


def parse_gate(raw: object, where: str) -> Gate:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with name and prometheus")
    known = {"name", "prometheus", "for"}
    bad = set(raw) - known
    if bad:
        raise ConfigError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(known))})")
    query = str(raw.get("prometheus") or "").strip()
    if not query:
        raise ConfigError(f"{where}.prometheus: a PromQL expression is needed")
    applies = str(raw.get("for") or "promote").lower()
    if applies not in ("promote", "all"):
        raise ConfigError(f"{where}.for: expected promote or all")
    name = str(raw.get("name") or query[:60])
    return Gate(name, query, applies)


def gates_for(gates: Sequence[Gate], verb: str) -> list[Gate]:
    """The gates a merge of a `verb` request must pass: `all` gates always, `promote` gates for promotions."""
    return [g for g in gates if g.applies_to == "all" or verb == "promote"]


_RANGE = re.compile(r"^\d+-\d+$")
VERSION_FIELDS = ("image tag", "chart version")


def revert_command(verb: str, app: str, env: str, fields: Sequence[dict[str, object]]) -> str | None:
    """The command that undoes a request, from what it changed (its fields, old → new): a scale goes
    back to the old replicas or bounds; a version change rolls back to the version before. None when
    there is no safe inverse (a created cluster, a value that did not exist before)."""
    if verb == "create-cluster":
        return None
    mine = [f for f in fields if f.get("app", app) == app]
    if verb == "scale":
        if len(mine) != 1:
            return None
        old = mine[0].get("old")
        if isinstance(old, str) and (old.isdigit() or _RANGE.match(old)):
            return f"scale {app} {old} in {env}"
        return None
    if mine and all(str(f.get("field", "")) in VERSION_FIELDS or str(f.get("field", "")).startswith("image ")
                    for f in mine):  # fmt: skip
        return f"rollback {app} in {env}"
    return None
