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
    sent = {"Content-Type": content_type, **(headers or {})}
    return _request("POST", url, body, sent, timeout=timeout, what=what)


def get(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    what: str,
) -> tuple[int, bytes]:
    """GET and return (status, body) for any HTTP answer; raise only when unreachable."""
    return _request("GET", url, None, dict(headers or {}), timeout=timeout, what=what)


def _request(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    *,
    timeout: float,
    what: str,
) -> tuple[int, bytes]:
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{what} URL must be http(s)")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach {what}: {reason}", retryable=True) from None
