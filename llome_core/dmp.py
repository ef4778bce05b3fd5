"""Discrete Markov process pieces of the Ehrlich functions, matching pytorch-holo bit for bit.

Every function here performs the same torch operations, in the same order and precision (float32),
as ``holo.test_functions.elemental``, so an instance built from a seed is identical to holo's
(``shared/spec/algorithm.md`` §1). Only the feasibility test is our own: a lookup table of banned
transitions instead of holo's log-likelihood sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# holo draws the dense matrix as softmax(randn / 0.5) and keeps a band of 0.4 v allowed states.
SOFTMAX_TEMP = 0.5
BANDWIDTH_FRACTION = 0.4


@contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny linear algebra on one thread: on a busy 2-core machine, thread hand-offs for
    32x32 products cost 100x the arithmetic (seconds per instance instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def banded_mask(num_states: int, bandwidth: int) -> torch.Tensor:
    """(v, v) bool mask: entry (i, j) allowed when (j - i) mod v lies in [-b, b] (cyclic band)."""
    idx = torch.arange(num_states)
    diff = (idx[None, :] - idx[:, None]) % num_states
    return (diff <= bandwidth) | (diff >= num_states - bandwidth)


def sample_transition_matrix(
    num_states: int,
    bandwidth: int,
    generator: torch.Generator,
    softmax_temp: float = SOFTMAX_TEMP,
    repeats_always_possible: bool = True,
) -> torch.Tensor:
    """A random sparse ergodic transition matrix (float32), drawn exactly as holo draws it.

    Consumes ``generator`` in holo's order: ``randn(v, v)`` then ``randperm(v)`` (rows of the
    band mask). Raises ``ValueError`` when the draw is not ergodic (holo does not retry either).
    """
    dense = (torch.randn(num_states, num_states, generator=generator) / softmax_temp).softmax(
        dim=-1
    )
    mask = banded_mask(num_states, bandwidth)
    mask = mask[torch.randperm(num_states, generator=generator)]
    if repeats_always_possible:
        mask = mask | torch.eye(num_states, dtype=torch.bool)
    matrix = torch.where(mask, dense, torch.zeros_like(dense))
    matrix = matrix / matrix.sum(dim=-1, keepdim=True)

    # Perron-Frobenius: a primitive matrix has all entries of A^((v-1)^2 + 1) positive. Computed
    # with the same float32 products as holo so that the same seeds are accepted and rejected.
    power = matrix
    for _ in range((num_states - 1) ** 2):
        power = power @ matrix
    if not torch.all(power > 0):
        raise ValueError(
            f"the transition matrix drawn for num_states={num_states} with this seed is not "
            "ergodic (holo rejects it too); choose another random_seed"
        )
    return matrix


def stationary_distribution(
    transition_matrix: torch.Tensor, tolerance: float = 1e-5
) -> torch.Tensor:
    """Stationary law π (shape (v, 1), float32) from [(I - A)ᵀ; 1ᵀ] π = [0; 1] by QR, as holo."""
    n = transition_matrix.shape[0]
    a = (torch.eye(n) - transition_matrix).T
    a = torch.cat([a, torch.ones(n).reshape(1, -1)], dim=0)
    b = torch.zeros(n + 1, 1)
    b[-1] = 1
    q, r = torch.linalg.qr(a)
    solution = torch.linalg.solve(r, q.T @ b)
    residual = torch.norm(a @ solution - b) / torch.norm(b)
    if residual > tolerance:
        raise ValueError(
            "stationary distribution solve failed: the chain has no unique stationary law"
        )
    return solution


def sample_dmp(
    initial_dist: torch.Tensor,
    transition_matrix: torch.Tensor,
    num_steps: int,
    num_samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(num_samples, num_steps) int64 Markov-chain samples; one ``multinomial`` per position, as holo."""
    samples = torch.zeros(num_samples, num_steps, dtype=torch.int64)
    samples[:, 0] = torch.multinomial(
        initial_dist, num_samples, replacement=True, generator=generator
    )
    for t in range(1, num_steps):
        # one draw per row of A[prev]: the same generator consumption as holo's sample_dmp
        samples[:, t] = torch.multinomial(
            transition_matrix[samples[:, t - 1]], 1, generator=generator
        ).squeeze(-1)
    return samples


def banned_transitions(transition_matrix: torch.Tensor) -> torch.Tensor:
    """Flat (v*v,) bool table: entry i*v + j is True when the transition i -> j is infeasible."""
    return (transition_matrix <= 0).reshape(-1)


def is_feasible(x: torch.Tensor, banned: torch.Tensor, num_states: int) -> torch.Tensor:
    """(n,) bool: no banned transition between neighbours of each row of ``x`` (n, L) (first state free)."""
    if x.shape[1] < 2:
        return torch.ones(x.shape[0], dtype=torch.bool)
    pairs = x[:, :-1].to(torch.int32) * num_states + x[:, 1:].to(torch.int32)
    return ~banned[pairs].any(dim=1)
