"""A small JSON-over-HTTPS helper for the Twilio and Slack adapters (stdlib only)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from cloudgreet_billing.adapters.notify.protocol import DeliveryError


def post(
    url: str,
    body: bytes,
    *,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    what: str,
) -> tuple[int, bytes]:
    """POST and return (status, body) for any HTTP answer; raise only when unreachable."""
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{what} URL must be http(s)")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": content_type, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach {what}: {reason}") from None
