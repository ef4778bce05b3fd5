"""Service settings: one pydantic-settings class, read from the environment (or a ``.env`` file).

With nothing set, ``llome serve`` runs the embedded default: a SQLite file in the working
directory and an in-process Celery worker on an in-memory broker. Setting ``DATABASE_URL`` and
``REDIS_URL`` switches to Postgres and Redis with separate ``llome worker`` processes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    # The three well-known names work bare (DATABASE_URL) and prefixed (LLOME_DATABASE_URL).
    return AliasChoices(name, f"LLOME_{name}")


class Settings(BaseSettings):
    """Everything the API and the workers need to know about their surroundings."""

    model_config = SettingsConfigDict(
        env_prefix="LLOME_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str = Field("sqlite:///./llome.db", validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    data_dir: Path = Field(Path(".llome/data"), validation_alias=_env("DATA_DIR"))

    # Uploads: a clear 413 above these (one limit for every lab).
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_rows: int = 200_000
    # A previewed upload never committed is deleted this long after it was made (bytes and all).
    preview_ttl_h: float = 7 * 24.0
    # Requests a second per API key (a token bucket per web process; 0 turns it off).
    rate_limit_per_s: float = 100.0
    rate_limit_burst: float = 300.0
    # Database connections of one web process. At most db_pool_size + db_max_overflow requests
    # are let in at once (the rest wait up to request_queue_s, then get a 503 with Retry-After),
    # so a request that got in never waits for a connection held by one waiting for a thread.
    # No overflow by default: an overflow connection is opened and closed per request, a new
    # Postgres backend each time, just when the process is busiest.
    db_pool_size: int = 10
    db_max_overflow: int = 0
    db_pool_timeout_s: float = 5.0
    request_queue_s: float = 10.0

    # Jobs. A claimed step holds a lease that a heartbeat renews every lease_s / 3; a step whose
    # worker died is claimable again once its lease ran out.
    lease_s: float = 60.0
    # Redis redelivers an unacknowledged task after this long; keep it above the longest step.
    visibility_timeout_s: int = 4 * 3600
    # How often each worker looks for lost work (expired leases, never-delivered messages).
    recovery_interval_s: float = 30.0
    progress_interval_s: float = 1.0  # throttle for progress writes
    transient_retries: int = 5  # DB or broker hiccups inside a task

    # Webhooks: the hosts campaigns may notify, comma-separated ("hooks.lab.org,.example.org"
    # allows subdomains). None: no host, except 127.0.0.1 in the embedded default.
    notify_allowed_hosts: str | None = None
    notify_retry_base_s: float = 30.0  # the first retry's wait; each next one doubles
    public_url: str = "http://127.0.0.1:8000"  # how labs reach this server (webhook urls)

    torch_threads: int | None = None  # None: torch's default
    device: str = "auto"  # "auto" picks cuda when available, else cpu

    @field_validator("database_url")
    @classmethod
    def _driver(cls, v: str) -> str:
        # psycopg 3 is the installed driver; accept the URLs people paste from elsewhere.
        for prefix in ("postgres://", "postgresql://"):
            if v.startswith(prefix):
                return "postgresql+psycopg://" + v[len(prefix) :]
        return v

    @field_validator("redis_url")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def max_concurrent_requests(self) -> int:
        return max(1, self.db_pool_size + self.db_max_overflow)

    @property
    def embedded_worker(self) -> bool:
        """No broker configured: run the workers inside the web process on an in-memory broker."""
        return self.redis_url is None

    @property
    def notify_hosts(self) -> frozenset[str]:
        """The hosts webhooks may go to (lower case)."""
        if self.notify_allowed_hosts is None:
            return frozenset({"127.0.0.1"}) if self.embedded_worker else frozenset()
        return frozenset(
            h.strip().lower() for h in self.notify_allowed_hosts.split(",") if h.strip()
        )

    @property
    def broker_url(self) -> str:
        return self.redis_url or "memory://"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once; tests build their own ``Settings`` and pass them in."""
    return Settings()
