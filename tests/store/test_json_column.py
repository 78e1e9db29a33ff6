"""The text of a JSON column: orjson where it writes what ``json.dumps`` would mean, and
``json.dumps`` itself where orjson would refuse or write something else."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cloudgreet_billing.adapters.store.sql_base import json_column


class Plan(enum.StrEnum):
    PRO = "pro"


@dataclasses.dataclass
class Note:
    text: str


def as_json_dumps_writes(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": {"d": [1, 2.5, None, True], "c": "é ✓ \u2028 \x00 \x7f"}},
        {"amount": 2**63 - 1, "beyond": 2**64 + 1, "below": -(2**80)},  # orjson: 64 bits
        {"text": "\ud800 lone surrogate"},  # not Unicode: orjson refuses
        {1: "int key", 2: "another"},  # orjson refuses keys that are not str
        {"plan": Plan.PRO},  # a str subclass: orjson would pass it through
        {"nested": [[[[[[]]]]]], "empty": {}, "float": 1e16, "neg": -0.0},
    ],
)
def test_the_text_reads_back_as_json_dumps_would(value: Any) -> None:
    text = json_column(value)
    assert json.loads(text) == json.loads(as_json_dumps_writes(value))
    # Keys sorted and no spaces, as before: the same object gives the same text.
    assert text == json_column(json.loads(as_json_dumps_writes(value)))


def test_keys_are_sorted_and_the_text_compact() -> None:
    text = json_column({"b": [1, 2], "a": {"z": 1, "y": None}})
    assert text == '{"a":{"y":null,"z":1},"b":[1,2]}'


@pytest.mark.parametrize("value", [datetime(2026, 12, 1, tzinfo=UTC), Note("x"), {1: 1, "a": 2}])
def test_what_json_dumps_refuses_is_refused(value: Any) -> None:
    # orjson would write a datetime or a dataclass; a column never silently gets one.
    with pytest.raises(TypeError):
        as_json_dumps_writes(value)
    with pytest.raises(TypeError):
        json_column(value)
    with pytest.raises(TypeError):
        json_column({"inside": [value]})
