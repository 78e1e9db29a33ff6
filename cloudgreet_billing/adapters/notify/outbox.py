"""The outbox folder the ``file`` email and SMS backends write: one file per message."""

from __future__ import annotations

import uuid
from pathlib import Path

from cloudgreet_billing.adapters.files import write_bytes
from cloudgreet_billing.adapters.notify.protocol import DeliveryError
from cloudgreet_billing.clock import utcnow
from cloudgreet_billing.errors import BillingError


class Outbox:
    """``BILLING_OUTBOX_DIR``: created on the first message, and no reader ever sees half
    of one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ready = False

    def write(self, kind: str, step_id: int | None, suffix: str, data: bytes) -> str:
        """Write one message; return its file's name (the provider message id)."""
        if not self._ready:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DeliveryError(f"cannot create {self.folder}: {exc.strerror}") from None
            self._ready = True
        return write_atomically(self.folder, message_file_name(kind, step_id, suffix), data).name


def write_atomically(folder: Path, name: str, data: bytes) -> Path:
    """Write ``folder/name`` so that readers never see half a message (``adapters.files``)."""
    target = folder / name
    try:
        write_bytes(target, data)
    except BillingError as error:
        raise DeliveryError(error.message) from None
    return target


def message_file_name(kind: str, step_id: int | None, suffix: str) -> str:
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    step = f"step{step_id}" if step_id is not None else "billing"
    return f"{stamp}-{kind}-{step}-{uuid.uuid4().hex[:8]}{suffix}"
