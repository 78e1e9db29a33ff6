"""Reading Stripe events from a file or a stream, in every shape people save them in.

One event object, a JSON list of events, an Events API list page, or NDJSON (one event per
line, e.g. ``stripe listen --print-json``, pretty-printed or not). Values are decoded as
they arrive, so a live pipe from ``stripe listen`` is processed event by event rather than
at end of input.

What is a bad file and what is a bad event:

- the first value (or a list's first item) decides whether the input is events at all:
  when it is not valid JSON, or not an event (a list of invoices, a CSV), the whole input
  is refused with ``BadInput`` before anything is applied. So is a JSON list that is not
  valid JSON as a whole, since it is read whole;
- once the input has shown it holds events, every later value stands on its own: a value
  that is not an event is yielded as it is (and quarantined by ``apply_events``), and a
  value whose JSON cannot be read (broken, nested too deep, a number past Python's 4,300
  digits, or ``NaN``, ``Infinity`` and numbers too large for JSON: ``domain.json_text``)
  is yielded as ``UnreadableValue`` with its text. A value ends where the next
  begins: a line starting with ``{`` in the first column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

from cloudgreet_billing.domain.events import is_event, what_it_is
from cloudgreet_billing.domain.json_text import DECODER, NotJson, loads
from cloudgreet_billing.errors import BadInput

_SHAPES: Final = "give one event, a JSON list, an API list page, or one event per line"


@dataclass(frozen=True, slots=True)
class UnreadableValue:
    """A value among events whose JSON cannot be read: its text, where it starts, why."""

    text: str
    line: int
    reason: str


def read_events(stream: TextIO, source: str) -> Iterator[Any]:
    """Every value in ``stream`` where an event belongs, in order (see the module doc):
    events, values that are not events, and ``UnreadableValue``. ``BadInput`` when the
    input is not events at all."""
    first = _first_char(stream)
    if first is None:
        return
    if first == "[":
        # A JSON list has no line structure to stream on; it is read whole.
        text = first + stream.read()
        value = _load_whole(text, source)
        yield from _events_checked(_unwrap(value), source)
        return
    yield from _events_checked(_stream_values(first, stream), source)


def _events_checked(values: Iterator[Any], source: str) -> Iterator[Any]:
    """``values``, once the first of them has shown the input is events."""
    for value in values:
        if isinstance(value, UnreadableValue):
            raise BadInput(f"{source}: {value.reason}", hint=_SHAPES)
        if not is_event(value):
            raise BadInput(f"{source}: found {what_it_is(value)} where a Stripe event was expected")
        yield value
        break
    yield from values


def _stream_values(first: str, stream: TextIO) -> Iterator[Any]:
    """The values of a stream of JSON texts, each list page or list unwrapped."""
    buffer = first
    start_line, line_number = 1, 0
    for line in stream:
        line_number += 1
        if not buffer and line.startswith("{"):
            # The common case, one event a line, decoded without building a buffer.
            try:
                value, end = DECODER.raw_decode(line)
            except (ValueError, RecursionError):
                pass  # decided below, with the lines that follow
            else:
                if end == len(line) or line[end:].isspace():
                    yield from _unwrap(value)
                    start_line = line_number + 1
                    continue
        if line.startswith("{") and buffer.strip():
            # A value begins in the first column: what is pending ends here.
            yield from _pending_values(buffer, start_line)
            buffer, start_line = "", line_number
        buffer += line
        if not line.rstrip().endswith("}"):
            continue
        values, consumed = _decode_values(buffer)
        for value in values:
            yield from _unwrap(value)
        if consumed:
            start_line += buffer.count("\n", 0, consumed)
            buffer = buffer[consumed:]
            if not buffer.strip():
                buffer, start_line = "", line_number + 1
    if buffer.strip():
        yield from _pending_values(buffer, start_line)


def _pending_values(text: str, start_line: int) -> Iterator[Any]:
    """The values of a complete ``text``, then what of it does not decode, if anything."""
    values, consumed = _decode_values(text)
    for value in values:
        yield from _unwrap(value)
    rest = text[consumed:]
    if rest.strip():
        start_line += text.count("\n", 0, consumed)
        yield UnreadableValue(rest, start_line, _why_unreadable(rest, start_line))


def _decode_values(text: str) -> tuple[list[Any], int]:
    """The JSON values at the start of ``text``, one after another, and how many characters
    they (and the whitespace around them) take; the rest does not decode (yet)."""
    values: list[Any] = []
    position = 0
    while True:
        start = position
        while start < len(text) and text[start].isspace():
            start += 1
        if start == len(text):
            return values, start
        try:
            value, position = DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            # Incomplete (more lines to come), or unreadable: decided by what follows.
            return values, start
        values.append(value)


def _why_unreadable(text: str, start_line: int) -> str:
    """Why ``text`` is not a JSON value we can read, naming the line."""
    try:
        loads(text)
    except RecursionError:
        return f"the JSON from line {start_line} nests too deep to read"
    except NotJson as exc:
        return f"not valid JSON from line {start_line}: {exc}"
    except json.JSONDecodeError as exc:
        return (
            f"not valid JSON from line {start_line}: {exc.msg} "
            f"(line {start_line + exc.lineno - 1} column {exc.colno})"
        )
    except ValueError:
        return f"the JSON from line {start_line} holds a number too long to read (4,300+ digits)"
    return f"more than one JSON value from line {start_line}"


def _first_char(stream: TextIO) -> str | None:
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == "\ufeff" or char.isspace():
            continue
        return char


def _load_whole(text: str, source: str) -> Any:
    try:
        return loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"{source}: {_why_unreadable(text, 1)}", hint=_SHAPES) from None


def _unwrap(value: Any) -> Iterator[Any]:
    """A list's items, a list page's ``data``, or the value itself."""
    if isinstance(value, list):
        yield from value
    elif isinstance(value, Mapping) and value.get("object") == "list":
        data = value.get("data")
        yield from data if isinstance(data, list) else [value]
    else:
        yield value
