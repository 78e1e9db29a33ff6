"""Progress bars go to stderr for people, and never to JSON consumers or cron."""

from __future__ import annotations

import io
import sys

from cloudgreet_billing.cli.output import set_json_mode
from cloudgreet_billing.cli.progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_on_a_terminal_stderr(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("FORCE_COLOR", "1")
    set_json_mode(False)
    stdout_before = sys.stdout
    with progress_bar("importing rows", total=100) as advance:
        assert advance is not None
        advance(60)
    assert "importing rows" in terminal.getvalue()
    assert sys.stdout is stdout_before


def test_no_bar_without_a_terminal_in_json_mode_or_below_the_minimum(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    set_json_mode(False)
    with progress_bar("rows") as advance:
        assert advance is None
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    set_json_mode(True)
    with progress_bar("rows") as advance:
        assert advance is None
    set_json_mode(False)
    with progress_bar("rows", total=10, minimum=200) as advance:
        assert advance is None
