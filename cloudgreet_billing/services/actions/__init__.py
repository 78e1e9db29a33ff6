"""Operator actions: ``retry``, ``resend-link`` and ``portal`` (see ``common`` for the
order every action follows and the audit story it writes)."""

from cloudgreet_billing.services.actions.common import (
    Banner,
    ConfirmRequest,
    Safety,
    request_json,
)
from cloudgreet_billing.services.actions.portal import PortalResult, portal_link
from cloudgreet_billing.services.actions.resend import ResendResult, resend_link
from cloudgreet_billing.services.actions.retry import RetryResult, retry_key, retry_payment

__all__ = [
    "Banner",
    "ConfirmRequest",
    "PortalResult",
    "ResendResult",
    "RetryResult",
    "Safety",
    "portal_link",
    "request_json",
    "resend_link",
    "retry_key",
    "retry_payment",
]
