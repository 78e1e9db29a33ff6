"""``sync``: Stripe events (API, file or stdin) and listings into the local store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, note
from cloudgreet_billing.cli.progress import Meter, progress_bar, progress_board
from cloudgreet_billing.domain.words import plural
from cloudgreet_billing.errors import ExitCode

if TYPE_CHECKING:
    from datetime import datetime
    from typing import TextIO

    from rich.console import Console

    from cloudgreet_billing.cli.context import AppContext
    from cloudgreet_billing.config import Settings
    from cloudgreet_billing.domain.dunning import DunningPlanner
    from cloudgreet_billing.services import Listing, Progress
    from cloudgreet_billing.services.sync import SyncReport


def planner_for(settings: Settings) -> DunningPlanner:
    """The dunning timeline of ``BILLING_CONFIG`` (or the default one)."""
    from cloudgreet_billing.domain.dunning import load_dunning_config

    return load_dunning_config(settings.config_path).planner


def sync(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Pull events created at or after this ISO time instead of the stored cursor.",
            callback=params.instant,
        ),
    ] = None,
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="List every customer, invoice and subscription (events reach back only 30 days).",
        ),
    ] = False,
    events_file: Annotated[
        str | None,
        typer.Option(
            "--events-file",
            help="Read events from this file, or - for stdin: one event, a JSON list, an "
            "API list page, or one event per line (stripe listen --print-json).",
            metavar="PATH|-",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Compare the mirror with Stripe's lists instead (exit 4 on any difference).",
        ),
    ] = False,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            parser=params.whole_days,
            help="With --verify: invoices created in the last N days (30).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="With --verify: apply Stripe's current objects."),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Pull Stripe events into the store: mirror, alerts, dunning. Safe to repeat.

    An event that cannot be applied is quarantined and the others applied; sync exits 4
    while any event waits in quarantine (see: quarantine list).

    --verify compares the mirror's invoices (created in the last --days) and every live
    subscription with Stripe's lists, and reports each difference; --repair applies
    Stripe's current object.

    Example: stripe listen --print-json | cloudgreet-billing sync --events-file -
    """
    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.cli.output import stripe_is_slow
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.timefmt import parse_instant
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services import sync as service

    if verify or repair or days is not None:
        from cloudgreet_billing.cli.sync_verify import run_verify

        if not verify:
            raise BadInput("--days and --repair go with --verify", hint="add --verify")
        if events_file is not None or backfill or since is not None:
            raise BadInput("--verify takes no --since, --backfill or --events-file")
        run_verify(ctx, days=days, repair=repair)
        return
    if events_file is not None and (backfill or since is not None):
        raise BadInput("--events-file cannot be combined with --since or --backfill")
    if backfill and since is not None:
        raise BadInput("--backfill lists everything; it takes no --since")
    context = app_context(ctx)
    settings = context.settings
    start = parse_instant(since, field="--since") if since is not None else None
    now = utcnow()
    if events_file is not None:
        report = _from_file(context, events_file, now, planner_for(settings))
        store = context.store()
    elif backfill:
        gateway = open_gateway(settings, batch=True, on_slow=stripe_is_slow)
        store = context.store()
        note(f"stripe: {gateway.mode} mode")
        with progress_bar("backfill") as progress:
            report = service.backfill(store, gateway, now=now, progress=progress)
    else:
        gateway = open_gateway(settings, batch=True, on_slow=stripe_is_slow)
        store = context.store()
        note(f"stripe: {gateway.mode} mode")
        with _paged_progress() as (listing, progress):
            report = service.sync_events(
                store,
                gateway,
                now=now,
                actor=settings.actor,
                since=start,
                planner=planner_for(settings),
                progress=progress,
                listing=listing,
            )
    service.record_sync(store, now=now, actor=settings.actor)
    service.note_quarantine(store, report)
    emit(report.as_json(), lambda console: _human(console, report))
    if report.needs_attention:
        raise typer.Exit(ExitCode.NEEDS_ATTENTION)


@contextmanager
def _paged_progress() -> Iterator[tuple[Listing | None, Progress | None]]:
    """Two bars on a terminal: the Events API's pages, as the share of the window they
    reach back over; then the events applied, out of all those read."""
    with progress_board() as board:
        if board is None:
            yield None, None
            return
        reading = board.meter("reading Stripe events", 1.0)
        read = 0
        applying: Meter | None = None
        applied = 0

        def listing(count: int, covered: float) -> None:
            nonlocal read
            read = count
            reading(covered, f"{count:,} events")

        def progress(count: int) -> None:
            nonlocal applying, applied
            if applying is None:
                reading(1.0, f"{read:,} events")
                applying = board.meter("applying events", read)
            applied += count
            applying(applied, f"{applied:,} of {read:,}")

        yield listing, progress


def _from_file(
    context: AppContext, events_file: str, now: datetime, planner: DunningPlanner
) -> SyncReport:
    """Apply the events of a file or stdin. The input shows it holds events (its first
    value, read here) before the store is opened: a bad file is one line, nothing else."""
    from functools import cache
    from itertools import chain

    from cloudgreet_billing.bootstrap import open_gateway
    from cloudgreet_billing.cli.output import stripe_is_slow
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services.events import read_events
    from cloudgreet_billing.services.sync import apply_events, stored_cursor

    def run(stream: TextIO, source: str) -> SyncReport:
        values = read_events(stream, source)
        first = next(values, None)
        store = context.store()
        # With a key, a decline the events leave out is read from Stripe: the gateway is
        # opened at the first event that needs it, once, and not at all for a file whose
        # events carry their declines.
        gateway = cache(
            lambda: (
                open_gateway(context.settings, batch=True, on_slow=stripe_is_slow)
                if context.settings.stripe_secret_key
                else None
            )
        )
        with progress_bar("events") as progress, _fewer_collections():
            report = apply_events(
                store,
                values if first is None else chain((first,), values),
                source="file",
                now=now,
                planner=planner,
                progress=progress,
                gateway=gateway,
            )
        # Files and webhooks may arrive out of order: they never move the API cursor.
        report.cursor = stored_cursor(store)
        return report

    try:
        if events_file == "-":
            return run(sys.stdin, "stdin")
        path = Path(events_file)
        if not path.is_file():
            raise BadInput(f"{events_file} is not a file", hint="give a JSON or NDJSON file, or -")
        # Checked whole first, so that a file with bad bytes far in writes nothing.
        _check_utf8(path)
        with path.open(encoding="utf-8") as stream:
            return run(stream, path.name)
    except UnicodeDecodeError:
        raise BadInput(f"{events_file} is not UTF-8 text") from None


#: Allocations between two collections of the youngest objects while a file is applied
#: (Python's default is 700).
YOUNG_COLLECTION_EVERY = 50_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect cyclic garbage less often while a file's events are applied: a batch keeps
    thousands of decoded events alive, and each collection walks them all, for nothing
    (decoded JSON holds no cycles; measured: a tenth of the sync's time). Refcounting still
    frees everything at once; this process applies one file, so the setting is its own."""
    import gc

    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], YOUNG_COLLECTION_EVERY), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _check_utf8(path: Path) -> None:
    """``UnicodeDecodeError`` unless the whole file is UTF-8 (read a MiB at a time)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            decoder.decode(chunk)
    decoder.decode(b"", final=True)


def _human(console: Console, report: SyncReport) -> None:
    from cloudgreet_billing.cli.render import when

    backfilled = (
        report.invoices_backfilled or report.subscriptions_backfilled or report.customers_backfilled
    )
    if backfilled or report.unreadable:
        console.print(
            f"backfilled {plural(report.customers_backfilled, 'customer')}, "
            f"{plural(report.invoices_backfilled, 'invoice')} and "
            f"{plural(report.subscriptions_backfilled, 'subscription')}"
        )
        for reason in report.unreadable:
            console.print(f"  left out, unreadable: {reason}", highlight=False, soft_wrap=True)
        print_quarantine(console, report)
        return
    console.print(
        f"{plural(report.events_seen, 'event')}: {report.events_applied} applied, "
        f"{report.events_skipped} skipped (types not acted on), "
        f"{report.events_duplicate} already processed, {report.events_failed} quarantined"
    )
    console.print(
        f"alerts: {report.alerts_opened} opened, {report.alerts_resolved} resolved; "
        f"dunning: {plural(report.dunning_scheduled, 'step')} scheduled, "
        f"{report.dunning_canceled} canceled"
    )
    if report.cursor is not None:
        console.print(f"cursor: events up to {when(report.cursor)}")
    print_quarantine(console, report)


def print_quarantine(console: Console, report: SyncReport) -> None:
    """What waits in quarantine, one line each, and how to settle it."""
    if not report.quarantined_count:
        return
    console.print(
        f"{plural(report.quarantined_count, 'event')} in quarantine, not applied (the others were):"
    )
    for row in report.quarantined:
        console.print(f"  {row.id}  {row.event_id or '(no event id)'}  {row.reason}")
    if report.quarantined_count > len(report.quarantined):
        console.print(f"  … and {report.quarantined_count - len(report.quarantined)} more")
    console.print(
        "after a fix: cloudgreet-billing quarantine retry --all; to give one up: "
        "cloudgreet-billing quarantine dismiss ID (see: quarantine list)"
    )
