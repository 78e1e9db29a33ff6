"""What a delivery backend offers: send one message, say its provider id, close."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class DeliveryError(Exception):
    """A message was not accepted; the text says why (never a secret).

    ``retryable`` says a later try may succeed (the provider was unreachable or answered
    5xx or 429), so a command can exit 75 rather than 1.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """A plain-text email. ``step_id`` ties it to its dunning step (None for escalations)."""

    to: str
    subject: str
    body: str
    step_id: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    to: str
    body: str
    step_id: int | None = None


class EmailSender(Protocol):
    #: ``smtp``, ``console`` or ``file``.
    name: str

    def send(self, email: OutgoingEmail) -> str | None:
        """Deliver one email; return the provider's message id, if there is one."""
        ...

    def close(self) -> None: ...


class SmsSender(Protocol):
    #: ``twilio``, ``console`` or ``file``.
    name: str

    def send(self, sms: OutgoingSms) -> str | None:
        """Deliver one SMS; return the provider's message id, if there is one."""
        ...

    def close(self) -> None: ...


class ChatPoster(Protocol):
    """Posts operational summaries (escalations) to the team's chat."""

    def post(self, text: str) -> None: ...
