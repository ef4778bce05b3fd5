"""Liveness and readiness: the database answers, the broker answers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from api.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(request: Request, response: Response, settings: SettingsDep) -> dict[str, object]:
    """``status: ok`` when the database and broker answer; 503 with the failing part otherwise."""
    checks: dict[str, str] = {}
    try:
        with request.app.state.read_session_factory() as session:  # never waits for a writer
            session.execute(text("select 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not crash: this route exists to say what is down
        checks["database"] = f"error: {exc.__class__.__name__}"
    if settings.redis_url:
        try:
            import redis

            redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {exc.__class__.__name__}"
    else:
        checks["broker"] = "embedded"
    ok = all(v in ("ok", "embedded") for v in checks.values())
    if not ok:
        response.status_code = 503
    return {
        "status": "ok" if ok else "degraded",
        **checks,
        "worker": "embedded" if settings.embedded_worker else "external",
    }
