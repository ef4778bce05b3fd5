"""``llome db``/``llome worker`` entry points, and docker-compose.yml/Dockerfile consistency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from api.config import get_settings
from llome_cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    for name in ("DATABASE_URL", "REDIS_URL", "LLOME_DATABASE_URL", "LLOME_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_llome_db_upgrade_creates_the_schema(env_settings: Path) -> None:
    assert main(["db", "upgrade"]) == 0
    engine = create_engine(f"sqlite:///{env_settings}/cli.db")
    assert {"campaign", "job", "measurement", "llome_alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_llome_worker_needs_a_broker(env_settings: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["worker"])
    assert exc.value.code == 2


def test_several_web_processes_need_a_broker(env_settings: Path) -> None:
    # The embedded worker takes tasks from one process's memory: a second process could not reach it.
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--web-processes", "2"])
    assert exc.value.code == 2


def test_the_web_process_never_loads_torch(tmp_path: Path) -> None:
    # Torch would triple a web process's objects, and its garbage collections stall every request.
    code = (
        "import sys; from api.main import create_app; from api.config import Settings; "
        f"create_app(Settings(database_url='sqlite:///{tmp_path}/w.db', redis_url='redis://127.0.0.1:6379/15'), "
        "migrate=False); sys.exit(int('torch' in sys.modules or 'transformers' in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr or "the web app imported torch"


def test_compose_runs_llome_commands_on_one_image() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker-gpu", "worker-cpu"} <= set(services)
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    for name in ("migrate", "api", "worker-gpu", "worker-cpu"):
        command = services[name]["command"]
        assert command[0] == "llome" and command[1] in COMMANDS, (name, command)
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql")
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://")
    assert services["worker-gpu"]["command"][2:4] == ["--queues", "gpu"]
    assert services["worker-cpu"]["command"][2:4] == ["--queues", "cpu"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("llome_core", "api", "worker", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "torch==${TORCH_VERSION}" in dockerfile
