"""Times as the contract writes them: aware UTC, ISO 8601 ending in ``Z``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Final

from cloudgreet_billing.errors import BadInput

#: The times the store keeps, typed or from Stripe: 2000-01-01 up to 2100-01-01 (UTC).
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
_ISO_HINT: Final = "use e.g. 2026-11-01 or 2026-11-01T09:30:00Z"


def parse_instant(raw: str, *, field: str = "time") -> datetime:
    """Parse ISO 8601 into aware UTC. A date alone means midnight UTC; no offset means UTC.
    An empty value is refused (it never means "now"), and so is a time outside
    ``EARLIEST`` to ``LATEST``."""
    text = raw.strip()
    if not raw.isprintable():
        from cloudgreet_billing.domain.inputs import refuse_unprintable

        refuse_unprintable(raw, field=field)
    if not text:
        raise BadInput(f"{field} is empty", hint=_ISO_HINT + ", or leave the option out")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text)
            # Past year 9999 an offset cannot be applied: that is out of range too.
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        from cloudgreet_billing.domain.inputs import shown

        if isinstance(exc, OverflowError) or "out of range" in str(exc):
            raise BadInput(
                f"{field} {shown(raw)} is outside 2000-01-01 to 2100-01-01", hint="check the year"
            ) from None
        raise BadInput(
            f"{field} {shown(raw)} is not an ISO 8601 date or time", hint=_ISO_HINT
        ) from None
    return check_instant(moment, field=field)


def check_instant(moment: datetime, *, field: str) -> datetime:
    """``moment`` when it lies inside the store's window (``EARLIEST`` to ``LATEST``)."""
    if not EARLIEST <= moment < LATEST:
        raise BadInput(
            f"{field} {iso_z(moment)} is outside 2000-01-01 to 2100-01-01", hint="check the year"
        )
    return moment


def parse_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since`` (inclusive) and ``--until`` (exclusive) of a listing; an empty window
    (``--since`` not before ``--until``) is refused: it could only ever list nothing."""
    from cloudgreet_billing.domain.inputs import check_window

    start = parse_instant(since, field="--since") if since else None
    end = parse_instant(until, field="--until") if until else None
    check_window(start, end)
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


def human_time(moment: datetime) -> str:
    """The one format people read a time in: ``2026-11-24 01:27 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
