"""What a command invocation carries: settings and the store, each made on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudgreet_billing.cli.output import note

if TYPE_CHECKING:
    from cloudgreet_billing.adapters.store.protocol import Store
    from cloudgreet_billing.config import Settings


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

    def store(self, *, check_schema: bool = True) -> Store:
        """The store the settings select, opened once; says which on stderr."""
        if self._store is None:
            from cloudgreet_billing.bootstrap import open_store

            self._store = open_store(self.settings, check_schema=check_schema)
            note(f"store: {self._store.backend} {self._store.location}")
        return self._store

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
