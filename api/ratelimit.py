"""Request rate per API key: a token bucket per key in the web process (``rate_limit_per_s``
tokens a second, ``rate_limit_burst`` at most). Over the limit: 429 with Retry-After. Each web
process counts its own requests; several processes behind a balancer each allow the rate."""

from __future__ import annotations

import math
import threading
import time

from api.errors import LlomeError


class TooManyRequests(LlomeError):
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate, self.burst = rate_per_s, max(burst, 1.0)
        self._lock = threading.Lock()
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, last time)

    def check(self, key_id: int) -> None:
        """Take one token for ``key_id``; TooManyRequests when there is none."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise TooManyRequests(
                    f"more than {self.rate:g} requests a second with this API key "
                    f"(burst {self.burst:g}); retry after {wait:.2f} s", wait)
            self._buckets[key_id] = (tokens - 1.0, now)
