"""The closed set of failures a user can see, each with its contract exit code.

Services raise these; the CLI renders them in exactly one place (``cli.output``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ExitCode:
    """Exit codes from the command-line contract."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    REFUSED = 3
    NEEDS_ATTENTION = 4
    UNAVAILABLE = 75


@dataclass
class BillingError(Exception):
    """A failure with a stable machine code, one human line, and the fix where there is one."""

    message: str
    hint: str | None = None
    code: str = "failed"
    exit_code: int = ExitCode.FAILED
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class BadInput(BillingError):
    """Malformed user input: amounts, dates, files, ids."""

    def __init__(
        self, message: str, hint: str | None = None, *, code: str = "bad_input", **details: Any
    ) -> None:
        super().__init__(message, hint, code, ExitCode.BAD_INPUT, details)


class NotFound(BadInput):
    """An id that names nothing in the store or in Stripe."""

    def __init__(self, message: str, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint, code="not_found", **details)


class ConfigError(BadInput):
    """A missing or malformed configuration value."""

    def __init__(self, message: str, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint, code="config", **details)


class Refused(BillingError):
    """Refused for safety: no ``--yes`` when not interactive, or a declined prompt."""

    def __init__(
        self, message: str, hint: str | None = None, *, code: str = "refused", **details: Any
    ) -> None:
        super().__init__(message, hint, code, ExitCode.REFUSED, details)


class Unavailable(BillingError):
    """Temporarily unavailable (Stripe unreachable, dunning paused): cron may retry later."""

    def __init__(
        self, message: str, hint: str | None = None, *, code: str = "unavailable", **details: Any
    ) -> None:
        super().__init__(message, hint, code, ExitCode.UNAVAILABLE, details)


class StoreError(BillingError):
    """The store refused or failed an operation."""

    def __init__(self, message: str, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint, "store", ExitCode.FAILED, details)


def refused_value(exc: BaseException) -> BadInput | None:
    """A value the store's driver refused, as bad input: the last line of defence behind
    ``domain.inputs``, so that PostgreSQL's ``DataError`` (``numeric value out of range``,
    ``invalid byte sequence``) or ``ProgramLimitExceeded`` (a value too large to index) is
    exit 2 and one line, never "unexpected". The drivers are looked up, not imported: a
    command that never loaded psycopg cannot have an error of it."""
    import sys

    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(
        exc, psycopg.DataError | psycopg.errors.ProgramLimitExceeded
    ):
        diag = getattr(exc, "diag", None)
        reason = (getattr(diag, "message_primary", None) or str(exc)).strip().splitlines()
        shown = reason[0][:200] if reason else type(exc).__name__
        return BadInput(
            f"PostgreSQL refused a value: {shown}",
            hint="check the ids, amounts, times and text given",
        )
    return None
