"""Reading Stripe events from a file or a stream, in every shape people save them in.

One event object, a JSON list of events, an Events API list page, or NDJSON (one event per
line, e.g. ``stripe listen --print-json``). Values are decoded as they arrive, so a live
pipe from ``stripe listen`` is processed event by event rather than at end of input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from cloudgreet_billing.errors import BadInput

_DECODER = json.JSONDecoder()


def read_events(stream: TextIO, source: str) -> Iterator[Mapping[str, Any]]:
    """Every event in ``stream``, in file order; ``BadInput`` names the line of bad JSON."""
    first = _first_char(stream)
    if first is None:
        return
    if first == "[":
        # A JSON list has no line structure to stream on; it is read whole.
        yield from _unwrap(_load(first + stream.read(), source, line=1), source)
        return
    buffer = first
    start_line = line_number = 1
    for line in stream:
        buffer += line
        line_number += 1
        if not line.rstrip().endswith("}"):
            continue
        try:
            value, end = _DECODER.raw_decode(buffer.lstrip())
        except json.JSONDecodeError:
            continue  # an object spanning more lines (pretty-printed)
        yield from _unwrap(value, source)
        rest = buffer.lstrip()[end:]
        if rest.strip():
            raise BadInput(
                f"{source}: unexpected text after the JSON value near line {line_number}",
                hint="give one event, a JSON list, an API list page, or one event per line",
            )
        buffer = ""
        start_line = line_number + 1
    if buffer.strip():
        yield from _unwrap(_load(buffer, source, line=start_line), source)


def _first_char(stream: TextIO) -> str | None:
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == "\ufeff" or char.isspace():
            continue
        return char


def _load(text: str, source: str, *, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source}: not valid JSON near line {line + exc.lineno - 1}: {exc.msg}",
            hint="give one event, a JSON list, an API list page, or one event per line",
        ) from None


def _unwrap(value: Any, source: str) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        items: Any = value
    elif isinstance(value, Mapping) and value.get("object") == "list":
        items = value.get("data") or []
    else:
        items = [value]
    for item in items:
        if not isinstance(item, Mapping):
            raise BadInput(f"{source}: found {type(item).__name__} where an event was expected")
        yield item
