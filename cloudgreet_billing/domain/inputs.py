"""What an operator may type or import: the one set of checks every command's ids, text,
times and windows go through, before anything reaches the store.

Each check refuses with ``BadInput`` (exit 2): one line that names the option and the
fix, and quotes the bad value shortened (``shown``), so that a megabyte typed is never
echoed back. The limits:

- numeric ids (alerts, dunning steps, quarantined events) are ASCII digits from 1 to
  2**63 - 1, the store's ``bigint``;
- Stripe ids carry the prefix of their kind (``cus_``, ``in_``, ``sub_``, ``evt_``) and
  then Stripe's characters (letters, digits, ``_``), at most 255 characters in all;
- text (descriptions, notes, reasons, your own ids) is valid UTF-8 with no control
  character (NUL, a line break, a tab, ESC, …): each is stored and shown as one line.
  Your ids (``external_id``) are at most 255 characters, other text 5,000;
- times lie from 2000-01-01 to 2100-01-01 (UTC), the window the store keeps Stripe's
  times in; the time of a ledger entry also at most a year after now, since usage is
  recorded after it happens;
- a window's ``--since`` is before its ``--until``, in every command that takes both.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from typing import Final, NoReturn

from cloudgreet_billing.domain.stripe_fields import BIGINT_MAX, MAX_ID_LENGTH, is_stripe_id
from cloudgreet_billing.domain.timefmt import check_instant, iso_z
from cloudgreet_billing.errors import BadInput

#: Characters of a bad value quoted back in a refusal.
SHOWN_CHARS: Final = 40
#: Free text: descriptions, notes, reasons.
MAX_TEXT_LENGTH: Final = 5_000
#: Your own ids (``external_id``): as long as Stripe lets its ids be.
MAX_EXTERNAL_ID_LENGTH: Final = MAX_ID_LENGTH
#: How far after now a ledger entry's time may lie.
ENTRY_FUTURE_LIMIT: Final = timedelta(days=366)
#: ``--days`` windows: a century is more than any store holds.
MAX_DAYS: Final = 36_525
#: ``--limit``: rows a listing may ask for (a store's ``bigint``).
MAX_LIMIT: Final = BIGINT_MAX

#: C0 and C1 controls, DEL, lone surrogates (bytes that were not UTF-8, as Python's
#: ``surrogateescape`` hands them over), and the Unicode line and paragraph separators.
_UNWANTED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile("[0-9]+")

KIND_NAMES: Final = {
    "cus_": ("customer", "a Stripe customer id (cus_…)"),
    "in_": ("invoice", "a Stripe invoice id (in_…)"),
    "sub_": ("subscription", "a Stripe subscription id (sub_…)"),
    "evt_": ("event", "a Stripe event id (evt_…)"),
}


def shown(raw: str) -> str:
    """A value as a refusal quotes it: escaped (``repr``), and past ``SHOWN_CHARS`` cut,
    with its length: ``'99999999999999999999'…(1000000 characters)``."""
    if len(raw) <= SHOWN_CHARS:
        return repr(raw)
    return f"{raw[:SHOWN_CHARS]!r}…({len(raw)} characters)"


def unwanted_character(raw: str) -> str | None:
    """Why ``raw`` cannot be stored as one line of text, or ``None`` when it can."""
    found = _UNWANTED.search(raw)
    if found is None:
        return None
    char = found.group()
    if _SURROGATE.fullmatch(char):
        return "is not valid UTF-8"
    name = unicodedata.name(char, "").lower() or f"U+{ord(char):04X}"
    return f"contains a control character ({name}, {char!r}) at position {found.start()}"


def refuse_unprintable(raw: str, *, field: str) -> NoReturn:
    """Refuse a value (an amount, a currency, a time, a kind) holding anything that is
    not printable: a tab or a line break around a number is a broken file, not blank."""
    raise BadInput(
        f"{field} {shown(raw)} "
        + (unwanted_character(raw) or "contains a character that is not printable"),
        hint="type it again as one line of plain text",
    )


def plain_text(raw: str | None, max_length: int = MAX_TEXT_LENGTH) -> bool:
    """Whether ``check_text`` would take ``raw`` as it is (``None`` too): a fast yes/no."""
    return raw is None or (len(raw) <= max_length and _UNWANTED.search(raw) is None)


def check_text(raw: str, *, field: str, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Free text typed or imported: one line of valid UTF-8, at most ``max_length``."""
    problem = unwanted_character(raw)
    if problem is not None:
        raise BadInput(
            f"{field} {shown(raw)} {problem}",
            hint="type it again as one line of plain text",
        )
    if len(raw) > max_length:
        raise BadInput(
            f"{field} {shown(raw)} is longer than {max_length:,} characters",
            hint=f"shorten it to at most {max_length:,}",
        )
    return raw


def optional_text(raw: str | None, *, field: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """``check_text``, blanks around it dropped; empty or absent is ``None``."""
    if raw is None:
        return None
    return check_text(raw, field=field, max_length=max_length).strip() or None


def check_stripe_id(raw: str, prefix: str, *, field: str | None = None) -> str:
    """A Stripe id of the kind ``prefix`` names (blanks around it dropped)."""
    kind, expected = KIND_NAMES.get(prefix, ("id", f"an id starting {prefix}"))
    label = field or kind
    check_text(raw, field=label, max_length=MAX_ID_LENGTH)
    value = raw.strip()
    if not is_stripe_id(value, prefix):
        raise BadInput(f"{label} {shown(raw)} is not {expected}", hint=f"use {prefix}…")
    return value


def parse_row_id(raw: str, *, what: str, hint: str) -> int:
    """A number the store gave a row (``alerts show 12``): ASCII digits, 1 to 2**63 - 1."""
    text = raw.strip()
    # Length first: int() of a million digits is slow, and refused past 4,300.
    if _DIGITS.fullmatch(text) and len(text.lstrip("0")) <= len(str(BIGINT_MAX)):
        number = int(text)
        if 0 < number <= BIGINT_MAX:
            return number
    raise BadInput(f"{shown(raw)} is not {what}", hint=hint)


def parse_number(raw: str) -> int | None:
    """``parse_row_id`` for an argument that may also be something else (an ``in_…`` id):
    the number, or ``None`` when ``raw`` is not ASCII digits at all."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        return None
    return parse_row_id(raw, what="a number from 1 to 2**63 - 1", hint="see: alerts list")


def parse_target(raw: str, *, prefixes: tuple[str, ...], number: str = "an alert id") -> int | str:
    """An argument that names a row by number (``number`` says what it counts) or a Stripe
    object by id, of a kind in ``prefixes``: the number, or the checked id."""
    check_text(raw, field="ID", max_length=MAX_ID_LENGTH)
    text = raw.strip()
    kinds = [f"{number} (a number)"] + [_short_kind(prefix) for prefix in prefixes]
    what = ", ".join(kinds[:2]) + "".join(f" or {kind}" for kind in kinds[2:])
    if _DIGITS.fullmatch(text):
        return parse_row_id(raw, what=what, hint="numbers run from 1 to 2**63 - 1")
    for prefix in prefixes:
        if text.startswith(prefix) and is_stripe_id(text, prefix):
            return text
    raise BadInput(f"{shown(raw)} is not {what}", hint="see: cloudgreet-billing alerts list")


def _short_kind(prefix: str) -> str:
    """``an invoice id (in_…)``, as a list of what an argument may be names it."""
    kind = KIND_NAMES[prefix][0]
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} id ({prefix}…)"


def check_entry_time(moment: datetime, now: datetime, *, field: str = "occurred_at") -> datetime:
    """A ledger entry's time: inside the store's window, and at most a year after now."""
    check_instant(moment, field=field)
    if moment > now + ENTRY_FUTURE_LIMIT:
        raise BadInput(
            f"{field} {iso_z(moment)} is more than a year from now",
            hint="record usage when it happens; check the year",
        )
    return moment


def check_window(since: datetime | None, until: datetime | None) -> None:
    """``--since`` before ``--until``: the same refusal in every command with both."""
    if since is not None and until is not None and since >= until:
        raise BadInput(
            f"--since {iso_z(since)} must be before --until {iso_z(until)}",
            hint="swap them, or leave one out",
        )


def check_days(days: int, *, field: str = "--days") -> int:
    """A window of ``days`` up to now: 1 to a century."""
    if not 1 <= days <= MAX_DAYS:
        raise BadInput(f"{field} must be from 1 to {MAX_DAYS:,}, not {days}")
    return days


def check_limit(limit: int, *, field: str = "--limit") -> int:
    """A listing's ``--limit``: 1 to the store's ``bigint``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"{field} must be from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def check_http_url(raw: str, *, field: str) -> str:
    """An ``http(s)://host…`` URL typed as an option, one line, at most 2,048 characters."""
    from urllib.parse import urlsplit

    check_text(raw, field=field, max_length=2_048)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - a bad port raises only when read
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"{field} {shown(raw)} is not an http(s) URL", hint="use https://host/path")
    return raw
