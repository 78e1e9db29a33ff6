"""Posts to a Slack incoming webhook (``SLACK_WEBHOOK_URL``)."""

from __future__ import annotations

import json

from cloudgreet_billing.adapters.notify.http import post
from cloudgreet_billing.adapters.notify.protocol import DeliveryError

#: Every post carries this tag, so the on-call channel can filter and route on it.
TAG = "billing_ops"


class SlackWebhook:
    def __init__(self, url: str, *, timeout: float = 15.0) -> None:
        self._url = url
        self._timeout = timeout

    def post(self, text: str) -> None:
        payload = json.dumps({"text": f"[{TAG}] {text}"}).encode()
        status, body = post(
            self._url,
            payload,
            content_type="application/json",
            timeout=self._timeout,
            what="the Slack webhook",
        )
        if status != 200:
            # Slack answers errors as plain text, e.g. 400 ``invalid_payload``, 403
            # ``action_prohibited``, 404 ``no_service``, 410 ``channel_is_archived``
            # (https://api.slack.com/messaging/webhooks#handling_errors); only 429 and 5xx
            # are worth another try.
            reason = body[:200].decode("utf-8", "replace").strip()
            raise DeliveryError(
                f"the Slack webhook answered HTTP {status}: {reason}",
                retryable=status == 429 or status >= 500,
            )
