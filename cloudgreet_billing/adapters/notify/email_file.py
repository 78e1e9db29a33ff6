"""Email to files: one RFC 5322 ``.eml`` per message in ``BILLING_OUTBOX_DIR``."""

from __future__ import annotations

import uuid
from pathlib import Path

from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingEmail
from cloudgreet_billing.adapters.notify.rfc5322 import build_message
from cloudgreet_billing.clock import utcnow


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write ``folder/name`` so that readers never see half a message."""
    target = folder / name
    partial = folder / f".{name}.partial"
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        raise DeliveryError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def message_file_name(kind: str, step_id: int | None, suffix: str) -> str:
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    step = f"step{step_id}" if step_id is not None else "billing"
    return f"{stamp}-{kind}-{step}-{uuid.uuid4().hex[:8]}{suffix}"


class FileEmailSender:
    name = "file"

    def __init__(self, outbox: Path, sender: str) -> None:
        self._outbox = outbox
        self._sender = sender
        self._ready = False

    def send(self, email: OutgoingEmail) -> str:
        if not self._ready:
            try:
                self._outbox.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DeliveryError(f"cannot create {self._outbox}: {exc.strerror}") from None
            self._ready = True
        _, data = build_message(email, self._sender, utcnow())
        return write_atomically(
            self._outbox, message_file_name("email", email.step_id, ".eml"), data
        ).name

    def close(self) -> None:
        return None
