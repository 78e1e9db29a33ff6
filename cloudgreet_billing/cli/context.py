"""What a command invocation carries: settings and the store, each made on first use."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudgreet_billing.cli.output import note

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.config import Settings
    from cloudgreet_billing.errors import BillingError


@dataclass
class AppContext:
    env_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from cloudgreet_billing.config import load_settings

            self._settings = load_settings()
        return self._settings

    def store(self, *, check_schema: bool = True, expect_new: bool = False) -> Store:
        """The store the settings select, opened once; says which on stderr, and warns
        when opening it made a new, empty one (unless the command makes one on purpose:
        ``expect_new``)."""
        if self._store is None:
            from cloudgreet_billing.bootstrap import open_store

            self._store = open_store(self.settings, check_schema=check_schema)
            note(f"store: {self._store.backend} {self._store.location}")
            if self._store.created and not expect_new:
                # Also in JSON mode (stdout stays JSON): a cron job that started in the
                # wrong folder must not write into a new store unnoticed.
                sys.stderr.write(
                    f"warning: created a new, empty store at {self._store.location} "
                    "(if you expected your existing store, set BILLING_DATABASE_URL to its "
                    "absolute path: sqlite:////path/to/billing.db)\n"
                )
        return self._store

    def explain(self, exc: BaseException) -> BillingError | None:
        """The open store's explanation of a failure of its own, if it has one."""
        return None if self._store is None else self._store.explain_failure(exc)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def app_context(ctx: typer.Context) -> AppContext:
    """The invocation's context, made by the root callback."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext()
        root.call_on_close(root.obj.close)
    return root.obj
