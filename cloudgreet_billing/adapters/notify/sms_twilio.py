"""SMS through Twilio's Messages API."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

from cloudgreet_billing.adapters.notify.http import post
from cloudgreet_billing.adapters.notify.protocol import DeliveryError, OutgoingSms

TWILIO_API = "https://api.twilio.com"


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
        self._url = (
            f"{api_base.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
            "/Messages.json"
        )
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._authorization = f"Basic {credentials}"
        self._sender = sender
        self._timeout = timeout

    def send(self, sms: OutgoingSms) -> str | None:
        form = urlencode({"To": sms.to, "From": self._sender, "Body": sms.body}).encode()
        status, body = post(
            self._url,
            form,
            content_type="application/x-www-form-urlencoded",
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            timeout=self._timeout,
            what="Twilio",
        )
        try:
            answer = json.loads(body) if body else {}
        except ValueError:
            answer = {}
        if not 200 <= status < 300:
            message = answer.get("message") if isinstance(answer, dict) else None
            code = answer.get("code") if isinstance(answer, dict) else None
            detail = f"{message} (Twilio error {code})" if message else body[:200].decode()
            raise DeliveryError(f"Twilio refused the SMS to {sms.to}: HTTP {status}: {detail}")
        return answer.get("sid") if isinstance(answer, dict) else None

    def close(self) -> None:
        return None
