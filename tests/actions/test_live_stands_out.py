"""LIVE mode stands out in colour on a terminal, and never with NO_COLOR or off one."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from cloudgreet_billing.cli import output
from cloudgreet_billing.cli.table import stand_out
from tests.actions.conftest import INVOICE_ID, invoice, run
from tests.stripe_fake import FakeStripe

LIVE_KEY = "sk_live_51LiveKey00000000000000009f3a"
RED = "\x1b[1;31m"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def preview(monkeypatch: pytest.MonkeyPatch) -> str:
    """``resend-link --dry-run`` with a live key, drawn on a colour terminal."""
    screen = io.StringIO()
    monkeypatch.setattr(
        output,
        "stdout_console",
        lambda: Console(
            file=screen,
            width=120,
            force_terminal=True,
            color_system="standard",
            markup=False,
            highlight=False,
        ),
    )
    with FakeStripe(api_key=LIVE_KEY) as live:
        monkeypatch.setenv("STRIPE_SECRET_KEY", LIVE_KEY)
        monkeypatch.setenv("STRIPE_API_BASE", live.url)
        live.reply("GET", "/v1/account", {"id": "acct_1Live", "object": "account"})
        live.reply("GET", f"/v1/invoices/{INVOICE_ID}", invoice("open"))
        assert run("resend-link", "1", "--dry-run").exit_code == 0
    return screen.getvalue()


def test_a_live_key_stands_out_in_the_dry_run_preview(
    fake_stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"key: sk_live_…9f3a ({RED}LIVE\x1b[0m mode)" in preview(monkeypatch)


def test_no_color_keeps_live_plain(
    fake_stripe: FakeStripe, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    drawn = preview(monkeypatch)
    assert "key: sk_live_…9f3a (LIVE mode)" in drawn and "\x1b[" not in drawn


def test_banners_on_stderr_colour_live_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert stand_out("LIVE", Terminal()) == f"{RED}LIVE\x1b[0m"
    assert stand_out("LIVE", io.StringIO()) == "LIVE"
    monkeypatch.setenv("NO_COLOR", "1")
    assert stand_out("LIVE", Terminal()) == "LIVE"
