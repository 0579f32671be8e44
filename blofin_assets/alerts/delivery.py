"""Sending alerts in event order, and the position that makes each one arrive exactly once.

The sensors read events after a position (a storage id in the instance's event log) in
ascending order, grouped by the event that closes them (a run's end). ``deliver`` posts each
group's alerts in turn and moves the position past a group only when all of them arrived; the
ones of a half-sent group are remembered by key, so a retry resends only what is missing.
The first alert that does not arrive stops the tick: the receiver is down for the rest too,
and order is kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from blofin_assets.alerts.payload import Alert
from blofin_assets.alerts.webhook import Delivery

CURSOR_VERSION = 1


@dataclass(frozen=True)
class AlertCursor:
    """Every group at or before ``after`` is delivered; of the next, the alerts in ``sent``."""

    after: int
    sent: frozenset[str] = frozenset()

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "after": self.after, "sent": sorted(self.sent)})

    @classmethod
    def from_json(cls, text: str | None) -> AlertCursor | None:
        """None for no cursor or one this code did not write: the caller starts afresh."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            if raw.get("v") != CURSOR_VERSION:
                return None
            return cls(int(raw["after"]), frozenset(str(key) for key in raw["sent"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


@dataclass(frozen=True)
class AlertGroup:
    """The alerts one closing event (at ``position``) brings, in the order they happened."""

    position: int
    alerts: list[Alert]


@dataclass
class Outcome:
    cursor: AlertCursor
    delivered: list[Alert] = field(default_factory=list)
    failure: str | None = None  # why the first undelivered alert did not arrive
    groups_done: int = 0
    stopped_early: bool = False  # the tick's budget ran out; the rest waits for the next


def deliver(
    groups: Iterable[AlertGroup],
    cursor: AlertCursor,
    send: Callable[[Alert], Delivery],
    *,
    budget_seconds: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Post what is not yet sent, in order; stop at the first failure or when the budget is
    spent. ``groups`` may be lazy: a group is read only when the ones before it are done."""
    deadline = clock() + budget_seconds
    outcome = Outcome(cursor)
    after, sent = cursor.after, set(cursor.sent)
    for group in groups:
        if group.position <= after:
            continue  # already delivered (a caller reading from an older position)
        for alert in group.alerts:
            if alert.key in sent:
                continue
            if clock() >= deadline:
                outcome.cursor, outcome.stopped_early = AlertCursor(after, frozenset(sent)), True
                return outcome
            result = send(alert)
            if not result.delivered:
                outcome.cursor, outcome.failure = AlertCursor(after, frozenset(sent)), result.detail
                return outcome
            sent.add(alert.key)
            outcome.delivered.append(alert)
        after, sent = group.position, set()
        outcome.groups_done += 1
    outcome.cursor = AlertCursor(after, frozenset(sent))
    return outcome
