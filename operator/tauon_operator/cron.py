"""Five-field cron schedules (minute hour day-of-month month day-of-week, in UTC), as a
Kubernetes CronJob reads them: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists, and
@hourly, @daily, @weekly, @monthly and @yearly. Day-of-month and day-of-week, when both are
restricted, match when either does (Vixie cron's rule)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))  # fmt: skip
# How far ahead `next_after` looks: a schedule that matches no day in eight years (February
# 30th) never fires.
HORIZON_DAYS = 366 * 8


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0 if step_text else 1
        if step < 1:
            raise ValueError(f"{name}: step {step_text!r} must be a positive number")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"{name}: {part!r} is not a range")
            start, end = int(a), int(b)
        elif span.isdigit():
            start = int(span)
            end = high if step_text else start
        else:
            raise ValueError(f"{name}: {part!r} is not a number, range or *")
        if not low <= start <= end <= high:
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expr: str) -> Schedule:
        """Raises ValueError naming the field that is wrong."""
        text = MACROS.get(expr.strip(), expr)
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(
                f"{expr!r} must have five fields (minute hour day-of-month month day-of-week) "
                "or be @hourly, @daily, @weekly, @monthly or @yearly"
            )
        minutes, hours, days, months, weekdays = (
            _field(p, *spec) for p, spec in zip(parts, FIELDS, strict=True)
        )
        return cls(
            minutes,
            hours,
            days,
            months,
            frozenset(d % 7 for d in weekdays),  # 7 is Sunday too
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def _day(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, t: datetime) -> datetime | None:
        """The first time strictly after `t` (to the minute) the schedule fires."""
        t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = t.replace(hour=0, minute=0)
        for _ in range(HORIZON_DAYS):
            if self._day(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        at = day.replace(hour=h, minute=m)
                        if at >= t:
                            return at
            day += timedelta(days=1)
        return None


def due(expr: str, since: datetime, now: datetime) -> bool:
    """Whether the schedule fired after `since` and at or before `now`."""
    at = Schedule.parse(expr).next_after(since)
    return at is not None and at <= now
