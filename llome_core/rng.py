"""Named random streams: every draw in llome goes through a generator derived from one seed.

A stream is named by a rule such as ``(seed, "generate", round)``, so a run that stops after any
step and resumes draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed for the stream ``(seed, *names)``, stable across processes and platforms."""
    key = repr((int(seed), *names)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def generator(seed: int, *names: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for the stream ``(seed, *names)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *names) if names else int(seed))
    return g


def generator_state(g: torch.Generator) -> list[int]:
    """The generator's state as a JSON-able list of bytes."""
    return g.get_state().tolist()


def restore_generator(state: list[int], device: str | torch.device = "cpu") -> torch.Generator:
    """A generator whose state is ``state`` (from :func:`generator_state`)."""
    g = torch.Generator(device=device)
    g.set_state(torch.tensor(state, dtype=torch.uint8))
    return g
