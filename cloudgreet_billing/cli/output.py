"""The one place that renders results and errors.

Success: a Rich table on stdout for people, ``{"data": …}`` for machines (``--json``).
Failure: one line on stderr (plus listed details such as bad CSV rows) for people, or
``{"error": {"code", "message", "hint"}}`` on stdout for machines, and the contract's
exit code. Rich is imported only when something is drawn for a person.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudgreet_billing.domain.timefmt import iso_z
from cloudgreet_billing.errors import BillingError

if TYPE_CHECKING:
    from rich.console import Console

    from cloudgreet_billing.adapters.deadline import SlowStripe

_json_mode: ContextVar[bool] = ContextVar("json_mode", default=False)


def _remember_json(value: bool) -> bool:
    if value:
        _json_mode.set(True)
    return value


JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json",
        help='Print {"data": …} on stdout instead of a table.',
        callback=_remember_json,
        is_eager=True,
    ),
]


def json_mode() -> bool:
    return _json_mode.get()


def set_json_mode(value: bool) -> None:
    _json_mode.set(value)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(payload: Any) -> str:
    return json.dumps(payload, default=_default, ensure_ascii=False)


def stdout_console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True, markup=False, highlight=False)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def emit(data: Any, human: Callable[[Console], None] | None = None) -> None:
    """Render a successful result: ``{"data": …}`` in JSON mode, else ``human(console)``."""
    if json_mode() or human is None:
        sys.stdout.write(dumps({"data": data}) + "\n")
        return
    human(stdout_console())


def note(message: str) -> None:
    """A line for people on stderr (store in use, progress notes); silent in JSON mode."""
    if not json_mode():
        sys.stderr.write(message + "\n")


def stripe_is_slow(slow: SlowStripe) -> None:
    """Told by the gateway (from a timer thread) when Stripe keeps a command waiting: a
    warning, so it is shown in JSON mode too (stdout stays JSON)."""
    sys.stderr.write(
        f"Stripe is slow: no answer yet to {slow.what} after {round(slow.waited, 1):g} s; "
        f"waiting at most {slow.seconds:g} s in all ({slow.setting})\n"
    )
    sys.stderr.flush()


def fail(error: BillingError) -> int:
    """Render an error and return the exit code to leave with."""
    listed = error.details.get("errors") if error.details else None
    if json_mode():
        body: dict[str, Any] = {"code": error.code, "message": error.message, "hint": error.hint}
        body.update({key: value for key, value in error.details.items()})
        sys.stdout.write(dumps({"error": body}) + "\n")
        return error.exit_code
    line = f"error: {error.message}"
    if error.hint:
        line += f" ({error.hint})"
    sys.stderr.write(line + "\n")
    if isinstance(listed, list):
        for item in listed:
            sys.stderr.write(f"  {item}\n")
    return error.exit_code
