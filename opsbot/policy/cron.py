"""A small five-field cron reader, enough for Argo CD sync-window schedules, with no dependency.

Why our own: windows need only "does a start fall in the last <duration>" and "when is the next
start", evaluated in the window's time zone; that is a few dozen lines, and it keeps the rules pure
and testable with an injected clock. Standard semantics: `*`, lists, ranges, steps, month and day
names, 0 or 7 for Sunday, and day-of-month OR day-of-week when both are restricted (Vixie cron).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from opsbot.errors import ConfigError

_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_NONE: dict[str, int] = {}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (("minute", 0, 59, _NONE), ("hour", 0, 23, _NONE), ("day of month", 1, 31, _NONE), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS))  # fmt: skip
#: How far `last_start`/`next_start` look: a window longer than a year, or a schedule that never
#: fires within one (e.g. 31 February), is refused when the config is read.
HORIZON_DAYS = 366


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def _starts_on(
        self, d: date, tz: ZoneInfo, *, reverse: bool = False, hours: range | None = None
    ) -> Iterator[datetime]:
        """Starts on local day `d`, in order (or reversed), made lazily: a caller stops at the first
        that fits, so an every-minute schedule costs a handful of datetimes, not 1,440 a day."""
        if not self.day_matches(d):
            return
        for h in sorted(self.hours, reverse=reverse):
            if hours is not None and h not in hours:
                continue
            for m in sorted(self.minutes, reverse=reverse):
                yield datetime.combine(d, time(h, m), tzinfo=tz)

    def last_start(self, now: datetime, tz: ZoneInfo, within: timedelta) -> datetime | None:
        """The latest start at or before `now` and after `now - within`, or None."""
        local = now.astimezone(tz)
        for back in range(0, within.days + 2):
            d = local.date() - timedelta(days=back)
            # Today, hours after now cannot start before it (2 h of slack for DST shifts).
            hours = range(0, min(24, local.hour + 3)) if back == 0 else None
            for start in self._starts_on(d, tz, reverse=True, hours=hours):
                if start <= now:
                    if now - start < within:
                        return start
                    return None  # every other start is earlier still
        return None

    def next_start(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """The first start after `now` (within a year), or None."""
        local = now.astimezone(tz)
        for ahead in range(0, HORIZON_DAYS + 1):
            hours = range(max(0, local.hour - 2), 24) if ahead == 0 else None
            for start in self._starts_on(local.date() + timedelta(days=ahead), tz, hours=hours):
                if start > now:
                    return start
        return None


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"bad step {step_text!r} in the {name} field")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = body.partition("-")
            first = _value(first_text, name, low, high, names)
            last = _value(last_text, name, low, high, names) if dash else (high if slash else first)
            if last < first:
                raise ValueError(f"range {body!r} runs backwards in the {name} field")
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not key.isdigit() or not low <= int(key) <= high:
        raise ValueError(f"{text!r} is not a {name} ({low}-{high})")
    return int(key)


def parse_cron(text: str) -> Cron:
    """Parse or raise ConfigError naming the field that is wrong."""
    parts = str(text).split()
    if len(parts) != 5:
        raise ConfigError(f'schedule "{text}": a cron schedule has 5 fields (minute hour day month weekday)')
    try:
        values = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    except ValueError as exc:
        raise ConfigError(f'schedule "{text}": {exc}') from None
    weekdays = frozenset(d % 7 for d in values[4])
    return Cron(
        text=str(text),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )
