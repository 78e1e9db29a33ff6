"""``incident summary``: the playbook's incident write-up, for the document and for Slack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.cli import params
from cloudgreet_billing.cli.context import app_context
from cloudgreet_billing.cli.output import JsonFlag, emit, note

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.domain.alerts import Alert

app = typer.Typer(
    help="Write up an incident from the audit log and the alert history.\n\n"
    "Example: cloudgreet-billing incident summary --since 2h",
    no_args_is_help=True,
)


@app.command("summary")
def summary(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Start of the window: a look-back (2h, 90m, 3d) or an ISO 8601 time.",
        ),
    ] = "2h",
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="End of the window, ISO 8601 (default: now).", callback=params.instant
        ),
    ] = None,
    post: Annotated[
        bool,
        typer.Option(
            "--post",
            help="Also post it to Slack (SLACK_WEBHOOK_URL), tagging SLACK_BILLING_OPS_HANDLE.",
        ),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Summarise an incident as Markdown: what failed, every action with its actor and
    outcome, whether dunning is paused, what is still open, and the next steps.

    Read-only. Paste the Markdown into the incident document; --post sends the same
    summary to billing_ops in Slack, with long lists cut to 15 lines.

    Example: cloudgreet-billing incident summary --since 2h --post
    """
    from cloudgreet_billing.bootstrap import open_chat
    from cloudgreet_billing.cli import render
    from cloudgreet_billing.clock import utcnow
    from cloudgreet_billing.domain.incident import is_lookback, parse_since, to_markdown
    from cloudgreet_billing.domain.inputs import check_window
    from cloudgreet_billing.domain.timefmt import parse_instant
    from cloudgreet_billing.errors import BadInput
    from cloudgreet_billing.services.incident import incident_summary, post_summary

    context = app_context(ctx)
    now = utcnow()
    end = parse_instant(until, field="--until") if until is not None else now
    if until is not None and not is_lookback(since):
        # Two times: refused as every command with --since and --until refuses them.
        check_window(parse_instant(since, field="--since"), end)
    start = parse_since(since, end)
    if until and end > now:
        raise BadInput("--until is in the future", hint="leave --until out to end now")
    settings = context.settings
    if post:
        settings.require("SLACK_WEBHOOK_URL")
    chat = open_chat(settings) if post else None
    result = incident_summary(context.store(), since=start, until=end, mode=settings.stripe_mode)
    markdown = to_markdown(result)
    if post:
        post_summary(result, chat, settings.billing_ops_handle)
        note(f"posted to Slack for {settings.billing_ops_handle}")

    def alert_json(alert: Alert) -> dict[str, Any]:
        # The contract's alert, plus what an incident needs: how often it failed, and why.
        shown = render.alert_json(alert, ())
        return {**shown, "attempt_count": alert.attempt_count, "last_failure": alert.last_failure}

    data = {**result.as_json(alert_json), "markdown": markdown, "posted": post}

    def human(console: Console) -> None:
        # Markdown as text, not rendered: it is meant to be copied into the document.
        console.out(markdown, end="", highlight=False)

    emit(data, human)
