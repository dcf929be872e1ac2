"""Token buckets: the relay's rate limits, with the clock passed in for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BucketMap", "FrameThrottle", "TokenBucket"]


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


class FrameThrottle:
    """A connection's frame and byte rates: two token buckets refilled from one clock read.

    Equivalent to a frame :class:`TokenBucket` and a byte one, each
    :meth:`~TokenBucket.reserve`-d per frame, at half the cost: the relay
    pays this for every frame it reads. A limit with ``rate <= 0`` is off; the
    relay gives a connection no throttle at all when both are off.
    """

    __slots__ = (
        "_byte_burst",
        "_byte_rate",
        "_bytes",
        "_clock",
        "_frame_burst",
        "_frame_rate",
        "_frames",
        "_stamp",
    )

    def __init__(
        self,
        frame_rate: float,
        frame_burst: float,
        byte_rate: float,
        byte_burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._frame_rate = max(frame_rate, 0.0)
        self._frame_burst = max(frame_burst, 1.0)
        self._byte_rate = max(byte_rate, 0.0)
        self._byte_burst = max(byte_burst, 1.0)
        self._frames = self._frame_burst
        self._bytes = self._byte_burst
        self._clock = clock
        self._stamp = clock()

    def delay(self, size: int) -> float:
        """Spend one frame and ``size`` bytes, going into debt; seconds to wait before acting."""
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        wait = 0.0
        rate = self._frame_rate
        if rate:
            frames = self._frames + elapsed * rate
            if frames > self._frame_burst:
                frames = self._frame_burst
            frames -= 1.0
            self._frames = frames
            if frames < 0:
                wait = -frames / rate
        rate = self._byte_rate
        if rate:
            tokens = self._bytes + elapsed * rate
            if tokens > self._byte_burst:
                tokens = self._byte_burst
            tokens -= size
            self._bytes = tokens
            if tokens < 0 and -tokens / rate > wait:
                wait = -tokens / rate
        return wait


class BucketMap:
    """One :class:`TokenBucket` per key (an address, an IP), made on first use.

    Bounded: past ``max_keys`` the buckets that are full again (their key has
    been idle long enough) are forgotten, which loses nothing; a flood of
    fresh keys can still not grow it past ``max_keys`` plus the busy ones.
    """

    __slots__ = ("_buckets", "_clock", "burst", "max_keys", "rate")

    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket; False (nothing spent) when it is empty."""
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                for idle in [k for k, b in self._buckets.items() if b.full]:
                    del self._buckets[idle]
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        return bucket.take()
