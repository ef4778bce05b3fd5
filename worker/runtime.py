"""Per-process worker state: settings, the database, the publisher, the compute device."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.db import make_engine, make_sessionmaker
from api.services.jobs import CeleryPublisher


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    device: str
    # Set when the process shuts down: running steps give their job back at the next report.
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, settings: Settings, celery_app: Any) -> Runtime:
        engine = make_engine(settings)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_sessionmaker(engine, CeleryPublisher(celery_app)),
            device=settings.resolved_device(),
        )
