"""The one backoff policy every retrying part of the relay uses: capped exponential,
``initial_s * 2**(attempt - 1)`` up to ``max_s``, with full jitter where many callers
retry against one server at once (uploads), and without where one caller waits on its
own (back-fill asking a camera again, the ledger writer).

The upload workers drive it through tenacity (``wait=policy.tenacity_wait``); the same
numbers come out either way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import RetryCallState


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float
    # Full jitter: each wait uniform in [0, ceiling] (AWS's "exponential backoff and jitter").
    jitter: bool = False

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1 for the first)."""
        return float(min(self.max_s, self.initial_s * 2 ** max(0, attempt - 1)))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return random.uniform(0, ceiling) if self.jitter else ceiling

    def tenacity_wait(self, state: RetryCallState) -> float:
        """As tenacity's ``wait=``: the wait after the attempt that just failed."""
        return self.delay(state.attempt_number)
