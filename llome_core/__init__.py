"""llome_core: the LLOME method, Ehrlich functions and the genetic algorithm, pure torch.

No web, database or Celery imports live here: the command line and the service drive the same code.
The public names below are imported lazily, so ``import llome_core.ehrlich`` never pays for
transformers and trl.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Alphabet": "llome_core.sequences",
    "Candidate": "llome_core.optimizer",
    "Ehrlich": "llome_core.ehrlich",
    "EhrlichConfig": "llome_core.config",
    "GAConfig": "llome_core.config",
    "GenerateConfig": "llome_core.config",
    "GeneticOptimizer": "llome_core.ga",
    "Labelled": "llome_core.optimizer",
    "LlomeLoop": "llome_core.loop",
    "LoopConfig": "llome_core.config",
    "ModelConfig": "llome_core.config",
    "Optimizer": "llome_core.optimizer",
    "Proposal": "llome_core.optimizer",
    "TrainConfig": "llome_core.config",
    "parse_schedule": "llome_core.config",
    "run_ga": "llome_core.ga",
}
__all__ = sorted(_PUBLIC)  # noqa: PLE0605 (a list, built from the table above)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'llome_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
