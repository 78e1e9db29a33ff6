"""Email to files: one RFC 5322 ``.eml`` per message in ``BILLING_OUTBOX_DIR``."""

from __future__ import annotations

from pathlib import Path

from cloudgreet_billing.adapters.notify.outbox import Outbox
from cloudgreet_billing.adapters.notify.protocol import OutgoingEmail
from cloudgreet_billing.adapters.notify.rfc5322 import build_message
from cloudgreet_billing.clock import utcnow


class FileEmailSender:
    name = "file"

    def __init__(self, outbox: Path, sender: str) -> None:
        self._outbox = Outbox(outbox)
        self._sender = sender

    def send(self, email: OutgoingEmail) -> str:
        _, data = build_message(email, self._sender, utcnow())
        return self._outbox.write("email", email.step_id, ".eml", data)

    def close(self) -> None:
        return None
