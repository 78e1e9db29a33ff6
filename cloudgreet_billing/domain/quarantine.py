"""Quarantined events: Stripe events that cannot be applied, kept with their reason.

An event whose fields are wrong (``"amount_due": [1]``), that a store constraint refuses,
or whose JSON cannot even be read, must not hold up the events around it. It is kept in
``billing_quarantined_events`` with its payload and reason, in the same transaction as
its batch, and waits for an operator: ``quarantine retry`` plans the payload again with
the code of the day (so a fix lets it through), ``quarantine dismiss`` gives up on it.

Like dj-stripe's webhook records, failures are data, not log lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from cloudgreet_billing.domain.events import EventSource
from cloudgreet_billing.domain.json_text import NotJson, loads
from cloudgreet_billing.domain.stripe_fields import (
    EARLIEST_TIME,
    LATEST_TIME,
    is_stripe_id,
)
from cloudgreet_billing.domain.timefmt import utc_from_unix
from cloudgreet_billing.errors import BadInput

QuarantineStatus = Literal["quarantined", "applied", "dismissed"]
QUARANTINE_STATUSES: Final = ("quarantined", "applied", "dismissed")
#: A reason is one line; a database's message can run to pages (a whole failing row).
MAX_REASON_CHARS: Final = 500
_EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,100}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event to quarantine: what could be read of it, why it was refused, its payload.

    ``event_id``, ``type`` and ``created`` are kept only when they are well formed (an
    ``evt_`` id, a dotted type, a time in range); ``payload`` is the event as JSON text,
    or, when even its JSON could not be read, that text as a JSON string.
    """

    event_id: str | None
    type: str | None
    created: datetime | None
    livemode: bool
    source: EventSource
    reason: str
    payload: str

    @property
    def dedupe_key(self) -> str:
        """One row per event: its id, or for an event without a usable id its payload's
        hash, so a redelivery updates the row instead of adding one."""
        if self.event_id is not None:
            return self.event_id
        return "sha256:" + hashlib.sha256(self.payload.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """A row of ``billing_quarantined_events``."""

    id: int
    event_id: str | None
    type: str | None
    stripe_created: datetime | None
    livemode: bool
    source: str
    reason: str
    payload: str
    status: QuarantineStatus
    times_seen: int
    first_seen_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` as a stored reason: its first line, control characters escaped, shortened."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    escaped = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", first)
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def reject(value: Any, reason: str, source: EventSource) -> RejectedEvent:
    """A decoded value that could not be planned (or applied), ready to quarantine."""
    event = value if isinstance(value, Mapping) else {}
    event_id = event.get("id")
    event_type = event.get("type")
    created = event.get("created")
    livemode = event.get("livemode")
    return RejectedEvent(
        event_id=event_id if is_stripe_id(event_id, "evt_") else None,
        type=event_type
        if isinstance(event_type, str) and _EVENT_TYPE.fullmatch(event_type)
        else None,
        created=utc_from_unix(created)
        if type(created) is int and EARLIEST_TIME <= created < LATEST_TIME
        else None,
        livemode=livemode is True,
        source=source,
        reason=one_line(reason),
        payload=encode_payload(value),
    )


def reject_text(text: str, reason: str, source: EventSource) -> RejectedEvent:
    """A value whose JSON could not be read at all: its text is the payload."""
    return RejectedEvent(
        event_id=None,
        type=None,
        created=None,
        livemode=False,
        source=source,
        reason=one_line(reason),
        payload=json.dumps(text),
    )


def encode_payload(value: Any) -> str:
    """JSON text of a decoded value, ASCII only (a NUL stays the escape ``\\u0000``, which
    any text column holds). Values nested too deep for ``json.dumps``'s recursion are
    written without recursing."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except RecursionError:
        return _encode_without_recursion(value)


def _encode_without_recursion(value: Any) -> str:
    parts: list[str] = []
    # A stack of what is left to write: values, and the literal text between them.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Text):
            parts.append(item.text)
        elif isinstance(item, Mapping):
            pending: list[Any] = [_Text("}")]
            for index, (key, member) in enumerate(reversed(list(item.items()))):
                pending.append(member)
                comma = "," if index < len(item) - 1 else ""
                pending.append(_Text(comma + json.dumps(str(key)) + ":"))
            stack.extend(pending)
            parts.append("{")
        elif isinstance(item, list):
            pending = [_Text("]")]
            for index, member in enumerate(reversed(item)):
                pending.append(member)
                if index < len(item) - 1:
                    pending.append(_Text(","))
            stack.extend(pending)
            parts.append("[")
        else:
            parts.append(json.dumps(item))
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


def decode_payload(payload: str) -> Any:
    """The event a stored payload holds, decoded again (for ``quarantine retry``).

    A payload kept as a JSON string is the text of an event whose JSON could not be
    read: it is read again, so that a reader that has learnt to read it lets it through.
    ``BadInput`` when it still cannot be read.
    """
    value = decode_json(payload, what="the stored payload")
    if isinstance(value, str):
        return decode_json(value, what="the event's text")
    return value


def decode_json(text: str, *, what: str) -> Any:
    """``json.loads`` with every failure as ``BadInput``: invalid JSON, a number longer
    than Python reads (4,300 digits), or nesting deeper than its parser's recursion."""
    try:
        return loads(text)
    except RecursionError:
        raise BadInput(f"{what} nests too deep to read") from None
    except NotJson as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError:
        raise BadInput(f"{what} holds a number too long to read") from None
