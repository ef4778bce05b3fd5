"""The ``llome`` command, the one place the processes start: ``serve``, ``worker``, ``db``,
``keys``, ``models``, ``bench``. It sits above ``api``, ``worker`` and ``benchmarks`` and composes
them (the embedded default is an app plus an in-process worker).

Each subcommand imports its code lazily, so ``llome bench ga`` never loads the web stack.
"""

from __future__ import annotations

import importlib
import sys

# name -> "module:function"; each function takes the remaining argv and parses its own flags.
COMMANDS: dict[str, str] = {
    "serve": "llome_cli.serve:serve_main",
    "worker": "llome_cli.worker:worker_main",
    "db": "llome_cli.db:db_main",
    "keys": "llome_cli.keys:keys_main",
    "models": "api.services.models:models_main",
}
BENCHMARKS: dict[str, str] = {
    "paper": "benchmarks.paper:main",
    "ehrlich-speed": "benchmarks.ehrlich_speed:main",
    "ga": "benchmarks.runs:ga_main",
    "llome": "benchmarks.runs:llome_main",
    "generation-speed": "benchmarks.generation_speed:main",
    "load": "benchmarks.load:main",
    "lambo": "benchmarks.lambo:main",
    "round": "benchmarks.round:main",
    "first-batch": "benchmarks.first_batch:main",
}

USAGE = """usage: llome <command> [options]

commands:
  serve [--host H] [--port P] [--web-processes N]
                                   start the web service (embedded SQLite + in-process worker
                                   unless DATABASE_URL / REDIS_URL are set)
  worker [--queues gpu,cpu]        start a Celery worker
  db upgrade                       apply the database migrations
  keys create --lab NAME | list | revoke ID
                                   manage the labs' API keys (a key is printed once)
  models add NAME DIR | list | remove NAME
                                   the model directories campaigns may name
  bench NAME [options]             run a benchmark (llome bench NAME --help): {benchmarks}
"""


def _usage() -> str:
    return USAGE.format(benchmarks=", ".join(BENCHMARKS))


def _call(target: str, argv: list[str]) -> int:
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(argv)
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "bench":
        if not rest or rest[0] not in BENCHMARKS:
            print(f"usage: llome bench {{{'|'.join(BENCHMARKS)}}} [options]", file=sys.stderr)
            return 2
        return _call(BENCHMARKS[rest[0]], rest[1:])
    if command not in COMMANDS:
        print(_usage(), file=sys.stderr)
        return 2
    return _call(COMMANDS[command], rest)
