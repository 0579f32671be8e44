"""One alert as the JSON a webhook receives.

Slack's incoming webhooks show ``text``, Discord's show ``content``: both carry the same human
line, so the one URL setting works for either, and any other receiver reads the structured
fields (``event``, ``asset``, ``check``, ``why``, ``run_url`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from blofin_assets.forward.live_skill import CHECK_NAME as LIVE_SKILL
from blofin_assets.ml.publish import REJECTED

EventName = Literal["run_failed", "check_failed", "candidate_rejected", "live_skill_error"]
SOURCE = "blofin_assets"
# Discord refuses content over 2,000 characters; Slack takes more, but a line that long is
# not read anyway: the run page has the rest.
MAX_TEXT = 1_900
MAX_WHY = 1_000
HEADLINES: dict[str, str] = {
    "run_failed": "Run failed",
    "check_failed": "Check failed",
    "candidate_rejected": "Candidate rejected",
    "live_skill_error": "Live skill ERROR",
}


@dataclass(frozen=True)
class Alert:
    """What happened, to what, and why; ``key`` names the event so it is sent once."""

    event: EventName
    key: str
    run_id: str
    job: str | None
    asset: str | None
    check: str | None
    severity: str
    why: str
    timestamp: float
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepFailure:
    step: str
    error: str


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_failed_alert(
    *,
    run_id: str,
    job: str | None,
    timestamp: float,
    failures: Sequence[StepFailure],
    run_error: str | None,
) -> Alert:
    """A failed run: its failed steps and their errors, else the run's own error (a run can
    fail before any step starts, e.g. when its run worker cannot be launched)."""
    steps = [failure.step for failure in failures]
    why = "; ".join(f"{f.step}: {f.error}" for f in failures) or run_error or "no error recorded"
    return Alert(
        event="run_failed",
        key=f"{run_id}/run_failed",
        run_id=run_id,
        job=job,
        asset=", ".join(steps) or None,
        check=None,
        severity="ERROR",
        why=clip(why, MAX_WHY),
        timestamp=timestamp,
        details={"failed_steps": steps},
    )


def check_alert(
    *,
    event_id: str,
    run_id: str,
    job: str | None,
    timestamp: float,
    asset: str,
    check: str,
    passed: bool,
    severity: str,
    description: str | None,
    metadata: Mapping[str, Any],
) -> Alert | None:
    """A failed ERROR check, or None: a WARN failure is reported in the UI and the run log
    only, and live_skill has its own event so a receiver can route it apart from the gates."""
    if passed or severity != "ERROR":
        return None
    return Alert(
        event="live_skill_error" if check == LIVE_SKILL else "check_failed",
        key=event_id,
        run_id=run_id,
        job=job,
        asset=asset,
        check=check,
        severity=severity,
        why=clip(description or "no description", MAX_WHY),
        timestamp=timestamp,
        details=dict(metadata),
    )


def candidate_alert(
    *,
    event_id: str,
    run_id: str,
    job: str | None,
    timestamp: float,
    asset: str,
    metadata: Mapping[str, Any],
) -> Alert | None:
    """A model materialization whose candidate was rejected, or None for any other."""
    if metadata.get("status") != REJECTED:
        return None
    return Alert(
        event="candidate_rejected",
        key=event_id,
        run_id=run_id,
        job=job,
        asset=asset,
        check=None,
        severity="ERROR",
        why=clip(str(metadata.get("status_reason") or "no reason recorded"), MAX_WHY),
        timestamp=timestamp,
        details={
            "version": metadata.get("version"),
            "served_version": metadata.get("served_version"),
        },
    )


def run_url(ui_url: str, run_id: str) -> str:
    """Dagster does not know the address its webserver is reached at: BLOFIN_UI_URL says."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def text_line(alert: Alert, url: str) -> str:
    """The line a person reads in a chat channel: what, on what, why, where to look."""
    subject = " / ".join(part for part in (alert.asset, alert.check) if part)
    if alert.event == "run_failed":
        subject = f"job {alert.job or '?'}"  # the failed steps open the why
    why = alert.why if alert.why.endswith((".", "!", "?", "…")) else alert.why + "."
    if alert.event == "candidate_rejected":
        served = alert.details.get("served_version")
        why += (
            " Nothing is served yet." if served in (None, "none") else f" Still serving {served}."
        )
    line = f"[{SOURCE}] {HEADLINES[alert.event]}: {subject}: {why} Run: {url}"
    if len(line) <= MAX_TEXT:
        return line
    keep = MAX_TEXT - len(f" Run: {url}") - 1
    return line[:keep] + "…" + f" Run: {url}"


def json_safe(value: Any) -> Any:
    """Metadata as strict JSON: NaN and inf become null (strict encoders refuse them) and a
    value JSON has no type for becomes its text, so a payload can always be posted."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def alert_payload(alert: Alert, ui_url: str) -> dict[str, Any]:
    """The JSON body: structured fields first, then the same line as ``text`` and ``content``."""
    url = run_url(ui_url, alert.run_id)
    line = text_line(alert, url)
    return {
        "source": SOURCE,
        "event": alert.event,
        "severity": alert.severity,
        "asset": alert.asset,
        "check": alert.check,
        "why": alert.why,
        "job": alert.job,
        "run_id": alert.run_id,
        "run_url": url,
        "timestamp": iso(alert.timestamp),
        "event_id": alert.key,
        "details": json_safe(dict(alert.details)),
        "text": line,
        "content": line,
    }
