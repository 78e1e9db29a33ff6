"""Email to the terminal (stderr), for trying the toolkit without a mail server."""

from __future__ import annotations

import sys
from typing import TextIO

from cloudgreet_billing.adapters.notify.protocol import OutgoingEmail


class ConsoleEmailSender:
    name = "console"

    def __init__(self, stream: TextIO | None = None, sender: str | None = None) -> None:
        self._stream = stream
        self._sender = sender or "billing@localhost"

    def send(self, email: OutgoingEmail) -> None:
        stream = self._stream or sys.stderr
        step = f" (dunning step {email.step_id})" if email.step_id is not None else ""
        stream.write(
            f"--- email{step}\nFrom: {self._sender}\nTo: {email.to}\n"
            f"Subject: {email.subject}\n\n{email.body.rstrip()}\n---\n"
        )

    def close(self) -> None:
        return None
