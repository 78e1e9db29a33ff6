"""SMS to files: one ``.sms.json`` (``to``, ``body``, …) per message in ``BILLING_OUTBOX_DIR``."""

from __future__ import annotations

import json
from pathlib import Path

from cloudgreet_billing.adapters.notify.email_file import message_file_name, write_atomically
from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingSms
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.timefmt import iso_z


class FileSmsSender:
    name = "file"

    def __init__(self, outbox: Path, sender: str | None = None) -> None:
        self._outbox = outbox
        self._sender = sender
        self._ready = False

    def send(self, sms: OutgoingSms) -> str:
        if not self._ready:
            try:
                self._outbox.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DeliveryError(f"cannot create {self._outbox}: {exc.strerror}") from None
            self._ready = True
        record = {
            "to": sms.to,
            "from": self._sender,
            "body": sms.body,
            "step_id": sms.step_id,
            "created_at": iso_z(utcnow()),
        }
        data = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode()
        return write_atomically(
            self._outbox, message_file_name("sms", sms.step_id, ".sms.json"), data
        ).name

    def close(self) -> None:
        return None
