"""One command's time budget for Stripe, shared by all its requests.

A server that accepts the connection and then stays silent would otherwise hold a command
for the SDK's read timeout times its tries (40 s x 3). Instead each command gets one
budget (``STRIPE_TIMEOUT_SECONDS``, or ``STRIPE_BATCH_TIMEOUT_SECONDS`` for paging): every
request's timeout shrinks to what is left of it, and no retry starts once it is spent.

The clock runs only while the command waits on Stripe (requests, retries and the back-off
between them), so the time a person takes to answer a confirmation prompt, or the store
takes to apply a page, is not charged to Stripe.

When one wait runs long, ``on_slow`` is told once (from a timer thread), so the CLI can say
so on stderr; this module never prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

#: After this long without an answer, the command says Stripe is slow (or after a quarter
#: of the budget, when the budget is shorter than 20 s).
SLOW_AFTER: Final = 5.0


@dataclass(frozen=True)
class SlowStripe:
    """What the CLI is told when one Stripe request has gone unanswered for a while."""

    #: The request, as error messages name it: "retrieve invoice in_…".
    what: str
    #: Seconds waited so far on this request.
    waited: float
    #: The whole budget of the command, and the variable that sets it.
    seconds: float
    setting: str


class StripeDeadline:
    """A budget of ``seconds`` of waiting on Stripe; see the module doc."""

    def __init__(
        self,
        seconds: float,
        *,
        setting: str = "STRIPE_TIMEOUT_SECONDS",
        on_slow: Callable[[SlowStripe], None] | None = None,
        slow_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.setting = setting
        self.slow_after = min(SLOW_AFTER, seconds / 4) if slow_after is None else slow_after
        self._on_slow = on_slow
        self._clock = clock
        self._spent = 0.0
        self._since: float | None = None
        self._expired = False
        self._told = False

    def left(self) -> float:
        """Seconds of the budget not yet spent (negative once overrun)."""
        running = 0.0 if self._since is None else self._clock() - self._since
        return self.seconds - self._spent - running

    @property
    def expired(self) -> bool:
        return self._expired or self.left() <= 0

    def expire(self) -> None:
        """Mark the budget spent: a request cut short at its end may stop a hair early."""
        self._expired = True

    @contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Charge the time inside to the budget; tell ``on_slow`` once if it runs long."""
        timer: threading.Timer | None = None
        # The start is noted before the timer starts: noted after, a busy machine could
        # run the timer first and the notice would say less time than really passed.
        self._since = self._clock()
        if self._on_slow is not None and not self._told:
            timer = threading.Timer(self.slow_after, self._tell, args=(what,))
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            self._spent += self._clock() - self._since
            self._since = None
            if timer is not None:
                timer.cancel()

    def _tell(self, what: str) -> None:
        if self._told or self._since is None or self._on_slow is None:
            return
        self._told = True
        self._on_slow(
            SlowStripe(
                what=what,
                waited=self._clock() - self._since,
                seconds=self.seconds,
                setting=self.setting,
            )
        )
