"""SMS to files: one ``.sms.json`` (``to``, ``body``, …) per message in ``BILLING_OUTBOX_DIR``."""

from __future__ import annotations

import json
from pathlib import Path

from cloudgreet_billing.adapters.notify.outbox import Outbox
from cloudgreet_billing.adapters.notify.protocol import OutgoingSms
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.domain.timefmt import iso_z


class FileSmsSender:
    name = "file"

    def __init__(self, outbox: Path, sender: str | None = None) -> None:
        self._outbox = Outbox(outbox)
        self._sender = sender

    def send(self, sms: OutgoingSms) -> str:
        record = {
            "to": sms.to,
            "from": self._sender,
            "body": sms.body,
            "step_id": sms.step_id,
            "created_at": iso_z(utcnow()),
        }
        data = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode()
        return self._outbox.write("sms", sms.step_id, ".sms.json", data)

    def close(self) -> None:
        return None
