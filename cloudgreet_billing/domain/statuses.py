"""Status vocabularies: Stripe's invoice and subscription statuses, and dunning steps'.

Constants only, with no record types: the store builds SQL from these at import time,
and opening a store must not pay for defining every area's records.
"""

from __future__ import annotations

from typing import Final

# --- Stripe invoices ------------------------------------------------------------------
INVOICE_STATUSES: Final = frozenset({"draft", "open", "paid", "uncollectible", "void"})
#: Settled invoices: nobody is chased for them, and nothing processed later reopens them.
SETTLED_INVOICE_STATUSES: Final = ("paid", "void", "uncollectible")
#: Invoices that never bill: a draft may still change, a void one was cancelled.
NOT_BILLED_STATUSES: Final = frozenset({"draft", "void"})

# --- Stripe subscriptions -------------------------------------------------------------
#: Every status Stripe documents for a subscription (API reference: subscription.status).
SUBSCRIPTION_STATUSES: Final = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
)
#: Subscriptions that count towards MRR.
COUNTED_STATUSES: Final = frozenset({"active", "past_due"})

# --- dunning steps --------------------------------------------------------------------
STEP_STATUSES: Final = (
    "scheduled",
    "sending",
    "sent",
    "skipped",
    "canceled",
    "failed",
    "needs_review",
)
#: Steps that may still go out, and so are canceled when the invoice is settled. A step in
#: ``sending`` is included: the run confirms its claim just before sending, so canceling it
#: then stops the message.
PENDING_STATUSES: Final = ("scheduled", "sending", "failed")
#: What ``dunning list`` shows by default: steps not yet final.
OPEN_STATUSES: Final = ("scheduled", "sending", "failed", "needs_review")
#: Steps that count towards escalation.
COMPLETED_STATUSES: Final = ("sent", "skipped")
#: Where ``mark-sent`` and ``requeue`` may start from.
MARK_SENT_FROM: Final = ("scheduled", "failed", "needs_review")
REQUEUE_FROM: Final = ("failed", "needs_review", "skipped")
