"""Rate limits count failures too (a 401 against the client's address, a 404 for another lab's
campaign against the key), and with Redis one count is shared by every web process."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.ratelimit import RateLimiter, TooManyRequests
from tests.conftest import REDIS_BASE_URL, make_key
from tests.service.test_campaigns import WETLAB


@pytest.fixture
def strict_app(settings, publisher):  # type: ignore[no-untyped-def]
    slow = settings.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 5})
    return create_app(slow, publisher=publisher, migrate=False)


def test_not_found_answers_count_against_the_key(strict_app, session_factory) -> None:
    owner, prober = make_key(session_factory), make_key(session_factory)
    with TestClient(strict_app) as c:
        cid = c.post(
            "/campaigns",
            json={"name": "a", "oracle": WETLAB},
            headers={"Authorization": f"Bearer {owner}"},
        ).json()["id"]
        probe = {"Authorization": f"Bearer {prober}"}
        codes = [c.get(f"/campaigns/{cid + i}", headers=probe).status_code for i in range(7)]
        assert codes[:5] == [404] * 5 and codes[5:] == [429, 429], codes
        # The owner's own allowance is its own.
        assert (
            c.get(f"/campaigns/{cid}", headers={"Authorization": f"Bearer {owner}"}).status_code
            == 200
        )


def test_failed_authentication_counts_against_the_client_address(strict_app) -> None:
    with TestClient(strict_app) as c:
        codes = [
            c.get("/campaigns/1", headers={"Authorization": f"Bearer llome_guess{i}"}).status_code
            for i in range(4)
        ]
        codes += [c.get("/campaigns").status_code for _ in range(3)]  # no key at all
        assert codes == [401] * 5 + [429, 429], codes
        r = c.post("/campaigns/1/uploads", files={"file": ("x.csv", b"sequence,score\n")})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # bodies too


def _redis_or_skip() -> str:
    import redis

    url = f"{REDIS_BASE_URL}/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # no Redis here: nothing to share the count through
        pytest.skip(f"Redis at {url} is not reachable: {exc}")
    return url


def test_web_processes_share_one_count_through_redis() -> None:
    url = _redis_or_skip()
    namespace = f"llome-test-{uuid.uuid4().hex}"  # this test's own keys in a shared Redis
    # Two web processes' limiters (each builds its own, as create_app does).
    first, second = (RateLimiter(0.01, 4, url, namespace=namespace) for _ in range(2))
    for limiter in (first, second, first, second):
        limiter.check(7)
    for limiter in (first, second):
        with pytest.raises(TooManyRequests):
            limiter.check(7)
    RateLimiter(0.01, 4, url, namespace=namespace).check(8)  # another key is not affected


def test_the_embedded_default_counts_in_memory(settings) -> None:
    limiter = RateLimiter(0.01, 2, None)
    limiter.check(1)
    limiter.check(1)
    with pytest.raises(TooManyRequests):
        limiter.check(1)
    assert settings.redis_url is None
