"""Resume any optimizer from its ``state()``: the one place that knows every kind.

It lives apart from :mod:`llome_core.optimizer` (the protocol and its data) because it imports
the implementations, which import the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llome_core.ga import GeneticOptimizer
from llome_core.loop import LlomeLoop
from llome_core.optimizer import Optimizer


def from_state(
    d: dict[str, Any],
    *,
    workdir: str | Path | None = None,
    feasible: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: str | None = None,
) -> Optimizer:
    """The optimizer whose ``state()`` is ``d``: the GA (``kind`` "ga") or the LLOME loop, which
    also needs its ``workdir``, the oracle's ``feasible`` constraint when known, and the
    ``device`` to run on (default: the one in the state)."""
    if d.get("kind") == "ga":
        return GeneticOptimizer.from_state(d)
    if workdir is None:
        raise ValueError("resuming a LLOME loop needs its workdir (checkpoints are written there)")
    return LlomeLoop.from_state(d, workdir, feasible=feasible, device=device)
