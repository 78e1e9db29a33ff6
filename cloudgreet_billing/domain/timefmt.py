"""Times as the contract writes them: aware UTC, ISO 8601 ending in ``Z``."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cloudgreet_billing.errors import BadInput


def parse_instant(raw: str, *, field: str = "time") -> datetime:
    """Parse ISO 8601 into aware UTC. A date alone means midnight UTC; no offset means UTC."""
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{field} {raw!r} is not an ISO 8601 date or time",
            hint="use e.g. 2026-11-01 or 2026-11-01T09:30:00Z",
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since`` (inclusive) and ``--until`` (exclusive) of a listing; an empty window
    (``--since`` not before ``--until``) is refused: it could only ever list nothing."""
    start = parse_instant(since, field="--since") if since else None
    end = parse_instant(until, field="--until") if until else None
    if start is not None and end is not None and start >= end:
        raise BadInput(
            f"--since {since} is not before --until {until}",
            hint="--since is inclusive and --until exclusive: give an earlier --since",
        )
    return start, end


def iso_z(moment: datetime | None) -> str | None:
    """``2026-11-24T01:27:32Z`` (microseconds only when present)."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"{text}Z"


def utc_from_unix(seconds: int) -> datetime:
    """A Stripe Unix timestamp to aware UTC."""
    return datetime.fromtimestamp(seconds, UTC)


def from_unix(seconds: int | None) -> datetime | None:
    """Stripe's Unix timestamps to aware UTC; None stays None."""
    return None if seconds is None else utc_from_unix(seconds)
