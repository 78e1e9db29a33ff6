"""SMS through Twilio's Messages API."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from cloudgreet_billing.adapters.notify.http import get, post
from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingSms

TWILIO_API = "https://api.twilio.com"


class TwilioAccountError(DeliveryError):
    """``verify`` failed; ``http_status`` is Twilio's answer, or None when unreachable."""

    def __init__(self, message: str, http_status: int | None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    """What Twilio says about the account the credentials open."""

    sid: str
    friendly_name: str | None
    #: ``active``, ``suspended`` or ``closed``.
    status: str
    #: ``Full`` or ``Trial`` (a trial account texts only verified numbers).
    type: str | None


class TwilioSmsSender:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        api_base: str = TWILIO_API,
        timeout: float = 15.0,
    ) -> None:
        self._account_sid = account_sid
        self._account_url = (
            f"{api_base.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
        )
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._authorization = f"Basic {credentials}"
        self._sender = sender
        self._timeout = timeout

    def send(self, sms: OutgoingSms) -> str | None:
        form = urlencode({"To": sms.to, "From": self._sender, "Body": sms.body}).encode()
        status, body = post(
            f"{self._account_url}/Messages.json",
            form,
            content_type="application/x-www-form-urlencoded",
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            timeout=self._timeout,
            what="Twilio",
        )
        answer = _json_object(body)
        if not 200 <= status < 300:
            detail = _error_detail(answer, body)
            raise DeliveryError(f"Twilio refused the SMS to {sms.to}: HTTP {status}: {detail}")
        sid = answer.get("sid")
        return sid if isinstance(sid, str) else None

    def verify(self) -> TwilioAccount:
        """Read the account these credentials open, as sending would authenticate; send nothing.

        Raises ``TwilioAccountError`` (a ``DeliveryError``) with Twilio's own message and
        error code when the SID or token is refused, or when Twilio cannot be reached. The
        token is never in it.
        """
        try:
            status, body = get(
                f"{self._account_url}.json",
                headers={"Authorization": self._authorization, "Accept": "application/json"},
                timeout=self._timeout,
                what="Twilio",
            )
        except DeliveryError as exc:
            raise TwilioAccountError(str(exc), None) from None
        answer = _json_object(body)
        if not 200 <= status < 300:
            detail = _error_detail(answer, body)
            raise TwilioAccountError(
                f"Twilio refused account {self._account_sid}: HTTP {status}: {detail}", status
            )
        account_status = answer.get("status")
        if not isinstance(account_status, str):
            raise TwilioAccountError(
                f"Twilio answered HTTP {status} without an account status", status
            )
        sid, name, kind = answer.get("sid"), answer.get("friendly_name"), answer.get("type")
        return TwilioAccount(
            sid=sid if isinstance(sid, str) else self._account_sid,
            friendly_name=name if isinstance(name, str) and name else None,
            status=account_status,
            type=kind if isinstance(kind, str) else None,
        )

    def close(self) -> None:
        return None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _error_detail(answer: dict[str, Any], body: bytes) -> str:
    """Twilio's error as it words it: message, its detail when given, and the error code."""
    message = answer.get("message")
    if not message:
        return body[:200].decode("utf-8", "replace")
    detail = answer.get("detail")
    said = f"{message}: {detail}" if detail and detail != message else str(message)
    return f"{said} (Twilio error {answer.get('code')})"
