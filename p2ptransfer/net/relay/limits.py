"""Token buckets: the relay's rate limits, with the clock passed in for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full.

    A bucket with ``rate <= 0`` never limits (the setting is off).
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are enough; False (and spend nothing) if not."""
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True

    def reserve(self, amount: float = 1.0) -> float:
        """Spend ``amount`` now, going into debt if needed; seconds to wait before acting.

        Used for back-pressure: the caller sleeps that long (not reading from
        the connection meanwhile), so a fast sender is slowed to ``rate``
        without any of its frames being dropped.
        """
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    @property
    def full(self) -> bool:
        """True when idle long enough to be full again (so it can be forgotten)."""
        if self.rate <= 0:
            return True
        return self._tokens + (self._clock() - self._stamp) * self.rate >= self.burst
