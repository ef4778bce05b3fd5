"""What a step cost: wall, process CPU and GPU seconds, measured around its compute."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass(frozen=True)
class StepCost:
    wall_s: float
    cpu_s: float  # the worker process's CPU time (every thread, torch's included)
    gpu_s: float  # seconds the step held a CUDA device (0 on CPU)


class StepClock:
    """``with StepClock(device) as clock: ...`` then ``clock.cost``. On CUDA the queued kernels
    are waited for before the clock stops, so GPU seconds are the step's, not its launches'."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.cost = StepCost(0.0, 0.0, 0.0)

    def __enter__(self) -> Self:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        wall = time.perf_counter() - self._wall
        self.cost = StepCost(
            round(wall, 3),
            round(time.process_time() - self._cpu, 3),
            round(wall, 3) if self.cuda else 0.0,
        )
