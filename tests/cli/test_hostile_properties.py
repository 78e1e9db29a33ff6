"""Property tests: any bad input to ``ledger add``, ``ledger import``, ``sync
--events-file`` or an id argument is exit 2 with one line, and writes nothing.

Each strategy makes values that are wrong by construction (a control character put into
otherwise good text, a number past 2**63 - 1, a time before 2000, a file that is no
ledger); where a family could by chance make a good value, an oracle written here, not
the code's own check, filters it out. Each example runs on a hostile_seeded store, SQLite and
PostgreSQL, whose row counts are compared after every example.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

from freezegun import freeze_time
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudgreet_billing.domain.iso4217 import ISO_4217
from cloudgreet_billing.services.ledger_csv import ALL_COLUMNS
from tests.cli.helpers import run
from tests.cli.hostile import (
    CUSTOMER_ID_COMMANDS,
    NUMBER_ID_COMMANDS,
    OTHER_ID_COMMANDS,
    STRIPE_ID_COMMANDS,
    assert_refused,
    row_counts,
)
from tests.dunning.stripe_objects import CUSTOMER_ID, INVOICE_ID, customer_object, invoice_object

#: Examples per property and backend: enough to meet every family, quick in CI.
EXAMPLES = 40
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The hostile_seeded store is shared by the examples on purpose: any write would show.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NOW = "2026-11-24T12:00:00Z"

# --- bad text, built from good text --------------------------------------------------

CONTROL = st.sampled_from([chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B)] + ["\u2028"])
NOT_UTF8 = st.sampled_from(["\udc80", "\udcff", "\udce9", "\udcc3"])
PRINTABLE = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=24
)


def spoiled(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``good`` text with a control character or a byte that is not UTF-8 put in."""
    return st.tuples(good, st.one_of(CONTROL, NOT_UTF8), st.integers(0, 40)).map(
        lambda parts: parts[0][: parts[2]] + parts[1] + parts[0][parts[2] :]
    )


def well_formed_stripe_id(value: str, prefix: str) -> bool:
    text = value.strip()
    return len(text) <= 255 and re.fullmatch(rf"{prefix}[A-Za-z0-9_]+", text) is not None


def bad_stripe_id(prefix: str) -> st.SearchStrategy[str]:
    good = st.text("abcXYZ019_", min_size=1, max_size=20).map(lambda body: prefix + body)
    return st.one_of(
        spoiled(good),
        st.integers(256 - len(prefix), 3000).map(lambda n: prefix + "a" * n),
        PRINTABLE.filter(lambda value: not well_formed_stripe_id(value, prefix)),
    )


def well_formed_number(value: str) -> bool:
    text = value.strip()
    return re.fullmatch("[0-9]+", text) is not None and 0 < int(text) < 2**63


NON_ASCII_DIGITS = st.text(
    st.characters(categories=["Nd"]).filter(lambda c: not "0" <= c <= "9"), min_size=1, max_size=4
)
BAD_NUMBER = st.one_of(
    st.integers(2**63, 10**40).map(str),
    st.integers(1, 30).map(lambda n: "0" * n),
    NON_ASCII_DIGITS,
    spoiled(st.integers(1, 10**6).map(str)),
    PRINTABLE.filter(
        lambda value: (
            not well_formed_number(value) and not value.strip().startswith(("in_", "cus_", "evt_"))
        )
    ),
)

# --- ledger add: one option hostile, the others good --------------------------------

GOOD = {
    "--customer": CUSTOMER_ID,
    "--kind": "booking_fee",
    "--amount": "2.50",
    "--currency": "usd",
    "--occurred-at": "2026-11-21T10:00:00Z",
    "--invoice": INVOICE_ID,
    "--description": "3 bookings",
    "--external-id": "booking-4713",
}
PLAIN_NUMBER = re.compile(r"\s*-?[0-9]+(\.[0-9]+)?\s*")
BAD_AMOUNT = st.one_of(
    st.integers(17, 1_000_000).map(lambda n: "9" * n),  # past 2**53 - 1 minor units
    st.integers(0, 10**6).map(lambda n: f"{n}.001"),  # finer than a cent
    st.integers(1, 10**9).map(lambda n: f"-{n}"),  # negative, and not a credit
    PRINTABLE.filter(lambda value: not PLAIN_NUMBER.fullmatch(value)),
    spoiled(st.just("2.50")),
)
BAD_CURRENCY = st.one_of(
    PRINTABLE.filter(lambda value: value.strip().lower() not in ISO_4217),
    spoiled(st.just("usd")),
)
BAD_TIME = st.one_of(
    st.sampled_from(["", "  "]),
    st.datetimes(max_value=datetime(1999, 12, 31, 23, 59, 59)).map(datetime.isoformat),
    st.datetimes(min_value=datetime(2100, 1, 1)).map(datetime.isoformat),
    # More than a year after NOW.
    st.datetimes(min_value=datetime(2027, 11, 26), max_value=datetime(2099, 12, 31)).map(
        lambda moment: moment.isoformat() + "Z"
    ),
    st.text("abcdefghijklmnopqrstuvwxyz :/", min_size=1, max_size=20).filter(str.strip),
    spoiled(st.just("2026-11-21")),
)
HOSTILE = {
    "--customer": bad_stripe_id("cus_"),
    "--kind": PRINTABLE.filter(
        lambda value: value.strip() not in ("subscription", "booking_fee", "credit_adjustment")
    ),
    "--amount": BAD_AMOUNT,
    "--currency": BAD_CURRENCY,
    "--occurred-at": BAD_TIME,
    "--invoice": bad_stripe_id("in_").filter(lambda value: value.strip(" ") != ""),
    "--description": st.one_of(
        spoiled(st.just("3 bookings")), st.integers(5001, 20_000).map(lambda n: "d" * n)
    ),
    "--external-id": st.one_of(
        spoiled(st.just("booking-4713")), st.integers(256, 5000).map(lambda n: "e" * n)
    ),
}
ONE_BAD_OPTION = st.sampled_from(sorted(HOSTILE)).flatmap(
    lambda name: HOSTILE[name].map(lambda value: (name, value))
)


@PROPERTY
@given(bad=ONE_BAD_OPTION)
@example(bad=("--amount", "9" * 1_000_000))
@example(bad=("--occurred-at", ""))
@example(bad=("--currency", "uds"))
def test_ledger_add_refuses_any_bad_option(hostile_seeded, bad):
    name, value = bad
    options = [f"{option}={value if option == name else good}" for option, good in GOOD.items()]
    with freeze_time(NOW):
        result = run("ledger", "add", *options)
    assert_refused(result)
    assert row_counts() == hostile_seeded


# --- ledger import: a file with one bad row, or no ledger at all ---------------------

COLUMN_OF = {
    "--customer": 0,
    "--kind": 1,
    "--amount": 2,
    "--currency": 3,
    "--occurred-at": 4,
    "--invoice": 5,
    "--description": 6,
    "--external-id": 7,
}


def good_row(number: int) -> list[str]:
    return [CUSTOMER_ID, "booking_fee", "2.50", "usd", "2026-11-21", INVOICE_ID, "", f"b-{number}"]


@st.composite
def bad_ledger_files(draw: st.DrawFn) -> bytes:
    """A CSV with good rows around one bad row, or a file that holds no ledger."""
    family = draw(st.sampled_from(["bad row", "bad row", "bad row", "empty", "separator", "bytes"]))
    rows = [good_row(number) for number in range(draw(st.integers(0, 3)))]
    if family == "empty":
        return draw(st.sampled_from(["", "\n", ",".join(ALL_COLUMNS) + "\n", "\r\n\r\n"])).encode()
    if family == "separator":
        separator = draw(st.sampled_from([";", "\t", "|"]))
        lines = [separator.join(ALL_COLUMNS)] + [
            separator.join(row) for row in rows or [good_row(0)]
        ]
        return ("\n".join(lines) + "\n").encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ALL_COLUMNS)
    if family == "bytes":
        writer.writerows(rows or [good_row(0)])
        text = out.getvalue().encode()
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + text[at:]
    name, value = draw(ONE_BAD_OPTION)
    bad = good_row(99)
    bad[COLUMN_OF[name]] = value
    rows.insert(draw(st.integers(0, len(rows))), bad)
    writer.writerows(rows)
    # Bytes that were not UTF-8 in an argument are not UTF-8 in a file either.
    return out.getvalue().encode("utf-8", "surrogateescape")


@PROPERTY
@given(body=bad_ledger_files())
def test_ledger_import_refuses_any_bad_file_and_writes_nothing(hostile_seeded, tmp_path, body):
    path = tmp_path / "usage.csv"
    path.write_bytes(body)
    with freeze_time(NOW):
        machine = run("ledger", "import", str(path), "--json")
        person = run("ledger", "import", str(path))
    assert machine.exit_code == 2, machine.stdout[:500]
    assert machine.stderr == "" and len(machine.stdout.splitlines()) == 1, machine.stdout[:500]
    assert json.loads(machine.stdout)["error"]["message"]
    # For people: one line, then (by design) each bad row indented under it.
    head, *listed = person.stderr.splitlines()
    assert person.exit_code == 2 and head.startswith("error: "), person.stderr[:500]
    assert all(line.startswith("  line ") for line in listed), person.stderr[:500]
    assert "Traceback" not in person.stderr and "unexpected" not in head
    assert row_counts() == hostile_seeded


# --- sync --events-file: files that hold no events ------------------------------------

NOT_EVENT_TYPES = st.sampled_from(["invoice", "customer", "subscription", "charge", "list "])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@st.composite
def not_events(draw: st.DrawFn) -> object:
    """A JSON value that is no Stripe event: a scalar, or an object of another type."""
    if draw(st.booleans()):
        return draw(SCALARS)
    kind = draw(NOT_EVENT_TYPES)
    base = {
        "invoice": invoice_object(finalized_at=datetime(2026, 11, 20, tzinfo=UTC)),
        "customer": customer_object(),
    }.get(kind, {"id": "obj_1", "object": kind})
    extra = draw(st.dictionaries(st.text("abcdef_", min_size=1, max_size=8), SCALARS, max_size=3))
    return {**extra, **base}


@st.composite
def bad_event_files(draw: st.DrawFn) -> bytes:
    family = draw(st.sampled_from(["value", "list", "bytes", "truncated", "csv", "text"]))
    if family == "value":
        return json.dumps(draw(not_events())).encode()
    if family == "list":
        return json.dumps(draw(st.lists(not_events(), min_size=1, max_size=3))).encode()
    if family == "truncated":
        text = json.dumps([draw(not_events()), {"object": "event"}])
        return text[: draw(st.integers(1, len(text) - 1))].encode()
    if family == "csv":
        return (",".join(ALL_COLUMNS) + "\n" + ",".join(good_row(0)) + "\n").encode()
    if family == "text":
        return draw(st.text("abcxyz <>#=", min_size=1, max_size=40).filter(str.strip)).encode()
    text = json.dumps({"object": "event", "id": "evt_1QpL9cLkdIwHu7ixA1s2D3f4"}).encode()
    at = draw(st.integers(0, len(text)))
    return text[:at] + b"\xff" + text[at:]


@PROPERTY
@given(body=bad_event_files())
@example(body=b"\xff\xfe")
@example(body=b"[1, 2")
def test_sync_refuses_any_file_that_holds_no_events(hostile_seeded, tmp_path, body):
    path = tmp_path / "events.json"
    path.write_bytes(body)
    assert_refused(run("sync", "--events-file", str(path)))
    try:
        # stdin is read as it arrives: bytes that are not UTF-8 after a first event stop
        # the stream there, by design, so stdin gets only the files that are UTF-8.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        assert_refused(run("sync", "--events-file", "-", input=text))
    assert row_counts() == hostile_seeded


# --- every id argument ------------------------------------------------------------------

ID_OPTIONS = [
    (["alerts", "list"], "--customer", "cus_"),
    (["ledger", "list"], "--customer", "cus_"),
    (["reconcile", "--offline"], "--customer", "cus_"),
    (["dunning", "list"], "--invoice", "in_"),
]
ANY_ID_ARGUMENT = st.one_of(
    st.tuples(st.sampled_from(NUMBER_ID_COMMANDS), BAD_NUMBER).map(
        lambda case: [*case[0], "--", case[1]]
    ),
    st.sampled_from(ID_OPTIONS).flatmap(
        lambda case: bad_stripe_id(case[2]).map(lambda value: [*case[0], f"{case[1]}={value}"])
    ),
    st.sampled_from(STRIPE_ID_COMMANDS).flatmap(
        lambda command: (
            st.sampled_from(["in_", "cus_"])
            .flatmap(bad_stripe_id)
            .map(lambda value: [*command, "--", value])
        )
    ),
    st.tuples(st.sampled_from(CUSTOMER_ID_COMMANDS), bad_stripe_id("cus_")).map(
        lambda case: [*case[0], "--", case[1]]
    ),
)


@PROPERTY
@given(args=ANY_ID_ARGUMENT)
@example(args=["alerts", "show", "--", "99999999999999999999"])
def test_every_id_argument_refuses_any_bad_id(hostile_seeded, args):
    assert_refused(run(*args))
    assert row_counts() == hostile_seeded


def test_every_id_argument_is_in_the_hostile_lists() -> None:
    """A new command with an ID argument joins these tests, or this fails."""
    from typer._click import Context
    from typer.main import get_command

    from cloudgreet_billing.cli import app

    root = get_command(app)
    context = Context(root)

    def id_commands(command: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        names = command.list_commands(context) if hasattr(command, "list_commands") else []
        for name in names:
            yield from id_commands(command.get_command(context, name), (*path, name))
        arguments = [
            p for p in getattr(command, "params", []) if type(p).__name__ == "TyperArgument"
        ]
        if any((p.metavar or "").endswith("ID") for p in arguments):
            yield path

    listed = {
        tuple(part for part in command if not part.startswith("-"))
        for command in (*NUMBER_ID_COMMANDS, *OTHER_ID_COMMANDS)
    } | {(group, name) for group, name, *_options in CUSTOMER_ID_COMMANDS}
    assert set(id_commands(root, ())) == listed


def test_the_strategies_make_only_bad_values() -> None:
    """The oracles agree with good values: the families really are the bad ones."""
    assert well_formed_stripe_id(CUSTOMER_ID, "cus_")
    assert well_formed_stripe_id(" " + INVOICE_ID + " ", "in_")
    assert not well_formed_stripe_id("cus_" + "a" * 252, "cus_")
    assert well_formed_number(" 42 ") and not well_formed_number(str(2**63))
