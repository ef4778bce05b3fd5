"""Request rate per API key, and per client address for requests without a working key.

Counted by the ``limits`` library: in Redis when ``REDIS_URL`` is set, so every web process
shares one count (N processes do not let a key through at N times the rate); in memory in the
embedded default (one process). A window of ``rate_limit_burst`` requests per
``burst / rate_limit_per_s`` seconds. Failed answers count too: a 401 counts against the
client's address, a 404 for a campaign the key cannot see against the key, so guessing keys or
ids runs into the same 429 as any other flood.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter

from api.errors import LlomeError

log = logging.getLogger("llome.api")


class TooManyRequests(LlomeError):
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class RateLimiter:
    """``hit(identity)`` takes one request from that identity's window or raises TooManyRequests."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        redis_url: str | None = None,
        namespace: str = "llome-rate",
    ) -> None:
        self.rate, self.burst = rate_per_s, max(int(burst), 1)
        self.item = RateLimitItemPerSecond(
            self.burst, max(1, round(self.burst / rate_per_s)) if rate_per_s > 0 else 1, namespace
        )
        storage: Storage = (
            RedisStorage(redis_url, key_prefix=namespace) if redis_url else MemoryStorage()
        )
        self._limiter = FixedWindowRateLimiter(storage)

    def hit(self, identity: str) -> None:
        if self.rate <= 0:
            return
        try:
            allowed = self._limiter.hit(self.item, identity)
        except Exception:  # Redis away for a moment: let the request through rather than fail it
            log.warning("rate limit store unreachable; request not counted", exc_info=True)
            return
        if not allowed:
            reset = self._limiter.get_window_stats(self.item, identity).reset_time
            wait = max(0.0, reset - time.time())
            raise TooManyRequests(
                f"more than {self.burst} requests in {self.item.multiples} s from this "
                f"{identity.split(':', 1)[0]} (failed and not-found answers count too); retry "
                f"after {wait:.1f} s",
                wait,
            )

    def check(self, key_id: int) -> None:
        """A request with the live key ``key_id``."""
        self.hit(f"key:{key_id}")

    def failed(self, scope_or_request: Any) -> None:
        """A request whose key was missing or wrong: counted against the client's address."""
        client = getattr(scope_or_request, "client", None)
        if client is None and isinstance(scope_or_request, dict):
            client = scope_or_request.get("client")
        host = client[0] if client else "unknown"
        self.hit(f"addr:{host}")


def limiter_of(state: Any) -> RateLimiter:
    """The app's limiter (``app.state``), built on first use from its settings."""
    if getattr(state, "rate_limiter", None) is None:
        settings = state.settings
        # Key ids count per database: two deployments (or test runs) sharing one Redis never
        # share a count.
        database = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
        state.rate_limiter = RateLimiter(
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
            settings.redis_url,
            namespace=f"llome-rate-{database}",
        )
    return state.rate_limiter
