"""SMS to the terminal (stderr)."""

from __future__ import annotations

import sys
from typing import TextIO

from cloudgreet_billing.adapters.notify.protocol import OutgoingSms


class ConsoleSmsSender:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, sms: OutgoingSms) -> None:
        stream = self._stream or sys.stderr
        step = f" (dunning step {sms.step_id})" if sms.step_id is not None else ""
        stream.write(f"--- sms{step} to {sms.to}\n{sms.body.rstrip()}\n---\n")

    def close(self) -> None:
        return None
