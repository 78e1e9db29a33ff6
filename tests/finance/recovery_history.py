"""A month of failed payments, applied through the store as Stripe and the toolkit make it.

Failures and payments arrive as Stripe events (``invoice.payment_failed``, ``invoice.paid``,
``invoice.voided``) through ``services.sync.apply_events``, which schedules the default
timeline (day 0 email, day 1 SMS, day 3 email). Steps go out by ``mark_step_sent`` at the
moment given, a manual retry settles through ``settle_paid_invoice`` with its audit line,
as ``retry`` does, a resent link is its ``resend-link`` audit line, an escalation is
``open_exhaustion_alert``, an exemption is ``exempt_customer`` (``dunning exempt``). The
last decline and advice codes (``billing_invoices``, schema 6) are written straight into
the invoice's row, as the store holds them, because the code that fills them from the
failed payment is built elsewhere.

The window is the 30 days before ``NOW`` (2026-10-25 12:00 to 2026-11-24 12:00 UTC).

| | currency, amount | history (days before NOW) | counted as |
|---|---|---|---|
| A | usd 129.00 | fails −10 (insufficient_funds); day 0, 1 sent; paid −8 | day 1 sms, 2d |
| B | usd 49.00 | fails −5 (insufficient_funds); paid 2h later, none sent | before any message |
| C | usd 200.00 | fails −20 (stolen_card); all three steps sent; escalated −16 | exhausted |
| D | usd 100.00 | fails −15 (expired_card); voided −12 | unrecoverable |
| E | usd 300.00 | fails −3 (insufficient_funds, try_again_later); 50 paid | 50 paid, 250 open |
| F | usd 75.00 | fails −7 (processing_error); day 0 sent; a retry pays −6 | manual retry, 1d |
| G | usd 99.00 | exempt since −40; fails −9; paid −4 | exempt, recovered, 5d |
| H | usd 50.00 | fails −40, before the window; paid −2 | not counted |
| I | eur 80.00 | fails −12 (do_not_honor); day 0, 1, 3 sent; paid a day later | day 3 email, 4d |
| J | eur 60.00 | exempt since −1; fails −6 | exempt, open |
| K | eur 40.00 | fails −2 (no decline code) | open |
| L | jpy ¥5,000 | fails −4 (insufficient_funds); link resent at 10m; paid at 30m | pay link, 30m |

Hand-computed, usd (not exempt: A–F): failed 6 invoices, $853.00; recovered A, B, F =
$253.00, a rate of 253/853 = 29.6600%; partially paid $50.00; open $250.00; exhausted
$200.00; unrecoverable $100.00 (253 + 50 + 250 + 200 + 100 = 853). Times to recover 2h,
1d, 2d: median (2nd of 3) 1d, p90 (3rd of 3) 2d. By last touch: before any message $49.00
(49/253 = 19.3676%), day 1 sms $129.00 (50.9881%), manual retry $75.00 (29.6443%). By
decline: hard expired_card $100.00, none back; hard stolen_card $200.00, none back; soft
insufficient_funds A, B, E $478.00, $178.00 back (37.2385%); soft processing_error $75.00,
all back. Exempt usd: G, $99.00, all back in 5d.

eur (I, K): failed $120.00 → €120.00, recovered €80.00 (66.6667%), open €40.00, median and
p90 4d, all after day 3 email; soft do_not_honor €80.00 all back, unknown none €40.00 none
back. Exempt eur: J, €60.00 open. jpy: ¥5,000 failed and recovered (100%), after a resent
pay link, in 30 minutes; soft insufficient_funds.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Final

from cloudgreet_billing.adapters.store.protocol_audit import AuditDraft
from cloudgreet_billing.domain.dunning import EscalationCandidate
from cloudgreet_billing.domain.mirror import parse_invoice
from cloudgreet_billing.services.sync import apply_events
from tests.finance.factories import NOW, unix
from tests.sync.conftest import event, full_invoice

DAY: Final = timedelta(days=1)
HOUR: Final = timedelta(hours=1)


def _ids(prefix: str, letter: str, length: int) -> str:
    return prefix + (f"1QpL{letter}" + "kdIwHu7ixl4OzzPMvXq7Rt2Wn")[:length]


#: Stripe-length ids: ``in_`` + 24, ``cus_`` + 14, ``evt_`` + 24.
INVOICES: Final = {letter: _ids("in_", letter, 24) for letter in "ABCDEFGHIJKL"}
CUSTOMERS: Final = {letter: _ids("cus_", letter, 14) for letter in "ABCDEFGHIJKL"}


def _invoice(
    letter: str,
    *,
    currency: str,
    amount: int,
    status: str,
    failed_at: datetime,
    attempt: int = 1,
    paid_at: datetime | None = None,
    amount_paid: int = 0,
) -> dict[str, Any]:
    """The whole invoice as Stripe sends it, in this history's currency and amounts."""
    created = unix(failed_at) - 3600
    body = copy.deepcopy(
        full_invoice(
            INVOICES[letter],
            customer=CUSTOMERS[letter],
            status=status,
            amount=amount,
            attempt_count=attempt,
            created=created,
        )
    )
    body["currency"] = currency
    body["lines"]["data"][0]["currency"] = currency
    if status == "paid":
        body["amount_paid"], body["amount_remaining"] = amount, 0
        assert paid_at is not None
        body["status_transitions"]["paid_at"] = unix(paid_at)
    else:
        body["amount_paid"], body["amount_remaining"] = amount_paid, amount - amount_paid
    if status == "void":
        body["status_transitions"]["voided_at"] = created + 3600
        body["next_payment_attempt"] = None
    return body


class History:
    """Applies the table above to a store, in the order things happened."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.serial = 0

    def _event(self, kind: str, obj: dict[str, Any], at: datetime) -> None:
        self.serial += 1
        event_id = _ids("evt_", f"{self.serial:02d}", 24)
        report = apply_events(
            self.store, [event(event_id, kind, obj, unix(at))], source="file", now=at
        )
        assert report.events_failed == 0, report.failures

    def fail(
        self,
        letter: str,
        currency: str,
        amount: int,
        at: datetime,
        *,
        decline: str | None,
        advice: str | None = None,
        amount_paid: int = 0,
    ) -> None:
        obj = _invoice(
            letter,
            currency=currency,
            amount=amount,
            status="open",
            failed_at=at,
            amount_paid=amount_paid,
        )
        self._event("invoice.payment_failed", obj, at)
        # Filled from the failed payment by the decline capture; here as the row holds it.
        with self.store._transaction():
            self.store._execute(
                "UPDATE billing_invoices SET last_decline_code = ?, last_advice_code = ? "
                "WHERE id = ?",
                (decline, advice, INVOICES[letter]),
            )
        self.amounts = getattr(self, "amounts", {})
        self.amounts[letter] = (currency, amount, at)

    def send(self, letter: str, day: int, at: datetime) -> None:
        steps = self.store.list_steps(invoice_id=INVOICES[letter], statuses=["scheduled"])
        step = next(step for step in steps if step.day == day)
        assert self.store.mark_step_sent(step.id, ["scheduled"], "sent", at) is not None

    def pay(self, letter: str, at: datetime) -> None:
        currency, amount, failed_at = self.amounts[letter]
        obj = _invoice(
            letter, currency=currency, amount=amount, status="paid", failed_at=failed_at, paid_at=at
        )
        self._event("invoice.paid", obj, at)

    def void(self, letter: str, at: datetime) -> None:
        currency, amount, failed_at = self.amounts[letter]
        obj = _invoice(letter, currency=currency, amount=amount, status="void", failed_at=failed_at)
        self._event("invoice.voided", obj, at)

    def manual_retry(self, letter: str, at: datetime) -> None:
        """``retry`` that pays: Stripe's ``invoice.paid`` in the same second, then the
        retry's settlement and audit line."""
        self.pay(letter, at)
        currency, amount, failed_at = self.amounts[letter]
        obj = _invoice(
            letter, currency=currency, amount=amount, status="paid", failed_at=failed_at, paid_at=at
        )
        self.store.settle_paid_invoice(
            parse_invoice(obj),
            resolution="paid by a manual retry (tester@ci)",
            audit=AuditDraft(
                actor="tester@ci", action="retry", target=INVOICES[letter], outcome="paid"
            ),
            now=at + timedelta(seconds=2),
        )

    def resend_link(self, letter: str, at: datetime) -> None:
        self.store.append_audit(
            AuditDraft(
                actor="tester@ci", action="resend-link", target=INVOICES[letter], outcome="sent"
            ),
            at,
        )

    def escalate(self, letter: str, at: datetime) -> None:
        currency, amount, _ = self.amounts[letter]
        candidate = EscalationCandidate(
            invoice_id=INVOICES[letter],
            customer_id=CUSTOMERS[letter],
            completed=3,
            amount_due=amount,
            currency=currency,
        )
        assert self.store.open_exhaustion_alert(candidate, {"completed": 3}, at) is not None

    def exempt(self, letter: str, at: datetime) -> None:
        """``dunning exempt``'s store operation."""
        outcome = self.store.exempt_customer(
            CUSTOMERS[letter], reason="payment plan agreed", actor="finance@cloudgreet", now=at
        )
        assert outcome.created


def apply_history(store: Any) -> None:
    """The table in the module's docstring, in time order."""
    h = History(store)
    h.exempt("G", NOW - 40 * DAY)
    h.fail("H", "usd", 5000, NOW - 40 * DAY, decline="insufficient_funds")
    h.fail("C", "usd", 20000, NOW - 20 * DAY, decline="stolen_card")
    h.send("C", 0, NOW - 20 * DAY + timedelta(minutes=5))
    h.send("C", 1, NOW - 19 * DAY)
    h.send("C", 3, NOW - 17 * DAY)
    h.escalate("C", NOW - 16 * DAY)
    h.fail("D", "usd", 10000, NOW - 15 * DAY, decline="expired_card")
    h.send("D", 0, NOW - 15 * DAY + timedelta(minutes=5))
    h.void("D", NOW - 12 * DAY)
    h.fail("I", "eur", 8000, NOW - 12 * DAY, decline="do_not_honor")
    h.send("I", 0, NOW - 12 * DAY + timedelta(minutes=5))
    h.send("I", 1, NOW - 11 * DAY)
    h.send("I", 3, NOW - 9 * DAY)
    h.pay("I", NOW - 8 * DAY)
    h.fail("A", "usd", 12900, NOW - 10 * DAY, decline="insufficient_funds")
    h.send("A", 0, NOW - 10 * DAY + timedelta(minutes=5))
    h.send("A", 1, NOW - 9 * DAY)
    h.fail("G", "usd", 9900, NOW - 9 * DAY, decline="insufficient_funds")
    h.pay("A", NOW - 8 * DAY)
    h.fail("F", "usd", 7500, NOW - 7 * DAY, decline="processing_error")
    h.send("F", 0, NOW - 7 * DAY + timedelta(minutes=5))
    h.manual_retry("F", NOW - 6 * DAY)
    h.fail("J", "eur", 6000, NOW - 6 * DAY, decline="insufficient_funds")
    h.fail("B", "usd", 4900, NOW - 5 * DAY, decline="insufficient_funds")
    h.pay("B", NOW - 5 * DAY + 2 * HOUR)
    h.pay("G", NOW - 4 * DAY)
    h.fail("L", "jpy", 5000, NOW - 4 * DAY, decline="insufficient_funds")
    h.resend_link("L", NOW - 4 * DAY + timedelta(minutes=10))
    h.pay("L", NOW - 4 * DAY + timedelta(minutes=30))
    h.fail(
        "E",
        "usd",
        30000,
        NOW - 3 * DAY,
        decline="insufficient_funds",
        advice="try_again_later",
        amount_paid=5000,
    )
    h.fail("K", "eur", 4000, NOW - 2 * DAY, decline=None)
    h.pay("H", NOW - 2 * DAY)
    h.exempt("J", NOW - 1 * DAY)
