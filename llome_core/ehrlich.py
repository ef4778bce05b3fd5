"""Ehrlich functions: the closed-form test function of the paper, identical to pytorch-holo's.

For the same parameters and seed, :class:`Ehrlich` builds the same transition matrix, motifs,
spacings, initial and optimal solutions, and gives the same values as
``holo.test_functions.closed_form.Ehrlich`` (checked against golden fixtures in ``tests/data``),
with two deliberate differences (``shared/spec/algorithm.md`` §1): infeasible sequences score 0
with a separate ``feasible`` flag instead of -inf, and evaluation is a vectorized numpy kernel on
uint8 arrays (over 10 million sequences/s on one core at v=L=32, tens of times holo's speed; see
``llome bench ehrlich-speed``).
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np
import torch

from llome_core import dmp
from llome_core.config import EhrlichConfig

# The paper's instance seed; the authors drew it with `random.seed(0); random.randint(0, 2**16)`.
PAPER_SEED = 50494

# The paper's instance and the five variants used by later work of the same authors:
# (num_states v, dim L, num_motifs c, motif_length k, quantization q).
PRESET_SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    (32, 32, 4, 4, 4),
    (32, 32, 4, 4, 2),
    (32, 128, 4, 4, 4),
    (32, 128, 4, 4, 2),
    (32, 128, 8, 8, 8),
    (8, 128, 8, 8, 8),
)

# Rows per chunk of the evaluation kernel: keeps the (L, chunk) uint8 working set in L2 cache.
EVAL_CHUNK = 8192

_PRESET_RE = re.compile(r"^ehr_v-(\d+)_l-(\d+)_m-(\d+)_c-(\d+)_q-(\d+)$")


def preset_name(
    num_states: int, dim: int, num_motifs: int, motif_length: int, quantization: int
) -> str:
    """The preset name of a shape, e.g. ``ehr_v-32_l-032_m-4_c-4_q-4``.

    ``m`` is the number of motifs and ``c`` the motif length (the name is ambiguous in the
    sources; all six presets have equal values, so either reading gives the same instances).
    """
    return f"ehr_v-{num_states}_l-{dim:03d}_m-{num_motifs}_c-{motif_length}_q-{quantization}"


PRESETS: dict[str, EhrlichConfig] = {
    preset_name(*shape): EhrlichConfig(*shape, random_seed=PAPER_SEED) for shape in PRESET_SHAPES
}


class Ehrlich:
    """An Ehrlich function instance (holo-compatible); see the module docstring.

    Attributes: ``transition_matrix`` (v, v) float32, ``stationary_dist`` (v,) float32, ``motifs``
    (c tensors of k states), ``spacings`` (c tensors of k-1 gaps, as holo stores them),
    ``offsets`` (c tensors of k positions relative to the motif start: 0 then the cumulative gaps).
    """

    def __init__(
        self,
        num_states: int,
        dim: int,
        num_motifs: int,
        motif_length: int,
        quantization: int | None = None,
        epistasis_factor: float = 0.0,
        random_seed: int = 0,
    ) -> None:
        _check_parameters(num_states, dim, num_motifs, motif_length, quantization, epistasis_factor)
        self.num_states = int(num_states)
        self.dim = int(dim)
        self.num_motifs = int(num_motifs)
        self.motif_length = int(motif_length)
        self.quantization = None if quantization is None else int(quantization)
        self.epistasis_factor = float(epistasis_factor)
        self.random_seed = int(random_seed)

        # One CPU generator consumed in holo's order (spec §1): matrix, mask permutation, motifs,
        # then spacings. A CUDA generator would give other instances, so this is always CPU.
        generator = torch.Generator().manual_seed(self.random_seed)
        bandwidth = int(self.num_states * dmp.BANDWIDTH_FRACTION)
        with dmp.single_thread():
            self.transition_matrix = dmp.sample_transition_matrix(
                self.num_states, bandwidth, generator
            )
            self.stationary_dist = dmp.stationary_distribution(self.transition_matrix).squeeze(-1)

        c, k = self.num_motifs, self.motif_length
        all_motifs = dmp.sample_dmp(
            self.stationary_dist, self.transition_matrix, c * k, 1, generator
        ).squeeze(0)
        self.motifs: list[torch.Tensor] = list(torch.chunk(all_motifs, c, dim=0))

        slack = self.dim - c * k
        self.spacings: list[torch.Tensor] = []
        for _ in range(c):
            # a uniform point normalized onto the simplex (not a Dirichlet draw), as holo does
            weights = torch.rand(k - 1, generator=generator)
            weights /= weights.sum()
            spacing = (slack // c) * weights
            self.spacings.append(1 + spacing.floor().to(torch.int64))
        self.offsets: list[torch.Tensor] = [
            torch.cat([torch.zeros(1, dtype=torch.int64), s.cumsum(0)]) for s in self.spacings
        ]

        banned = dmp.banned_transitions(self.transition_matrix)
        self._banned_u8 = banned.numpy().astype(np.uint8)
        # the smallest dtypes that hold a state and a (state, next state) pair index
        self._state_dtype = np.uint8 if self.num_states <= 256 else np.int32
        self._pair_dtype = np.int16 if self.num_states**2 <= 2**15 else np.int64
        self._response_table = self._make_response_table()
        self._response_np = self._response_table.numpy()
        # motif states and offsets as plain ints: the kernel loops over them, not over sequences
        self._motif_states = [m.tolist() for m in self.motifs]
        self._motif_offsets = [o.tolist() for o in self.offsets]

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, config: EhrlichConfig) -> Ehrlich:
        """The instance described by an :class:`EhrlichConfig`."""
        return cls(
            config.num_states,
            config.dim,
            config.num_motifs,
            config.motif_length,
            config.quantization,
            config.epistasis_factor,
            config.random_seed,
        )

    @classmethod
    def preset(cls, name: str, random_seed: int = PAPER_SEED) -> Ehrlich:
        """A named instance such as ``ehr_v-32_l-032_m-4_c-4_q-4`` (seed: the paper's by default)."""
        return cls.from_config(preset_config(name, random_seed))

    @property
    def config(self) -> EhrlichConfig:
        return EhrlichConfig(
            self.num_states,
            self.dim,
            self.num_motifs,
            self.motif_length,
            self.quantization,
            self.epistasis_factor,
            self.random_seed,
        )

    def _make_response_table(self) -> torch.Tensor:
        """(k+1,) float32: the motif response for each count of matched elements.

        Uses holo's exact float32 operations (floor-divide, divide, cubic response) on the counts
        0..k, so the table entries equal holo's per-sequence results bit for bit.
        """
        k = self.motif_length
        q = k if self.quantization is None else self.quantization
        factor_1 = math.ceil(k / q)
        factor_2 = k / factor_1
        counts = torch.arange(k + 1, dtype=torch.float32)
        quantized = counts // factor_1 / factor_2
        coeff = self.epistasis_factor * quantized * (quantized - 1.0) + 1.0
        return coeff * quantized

    # ------------------------------------------------------------------ solutions
    def initial_solution(self, n: int = 1) -> torch.Tensor:
        """(n, L) int64 DMP samples from the stationary law; the generator is re-seeded each call.

        As in holo, ``initial_solution(1)`` is not the first row of ``initial_solution(3)``;
        unlike holo, the result is always 2-D (holo squeezes n = 1 to shape (L,)).
        """
        if int(n) < 1:
            raise ValueError(f"n must be a positive number of sequences, got {n}")
        generator = torch.Generator().manual_seed(self.random_seed)
        with dmp.single_thread():  # sequential multinomial draws gain nothing from threads
            return dmp.sample_dmp(
                self.stationary_dist, self.transition_matrix, self.dim, int(n), generator
            )

    def optimal_solution(self) -> torch.Tensor:
        """(1, L) int64 sequence scoring 1: motifs end to end, gaps and tail filled by repeats."""
        solution: list[int] = []
        for motif, offsets in zip(self._motif_states, self._motif_offsets):
            for j, state in enumerate(motif):
                span = offsets[j + 1] - offsets[j] if j + 1 < len(motif) else 1
                solution += [state] * span
        solution += [solution[-1]] * (self.dim - len(solution))
        x = torch.tensor([solution], dtype=torch.int64)
        value = self(x)
        if not bool(value[0] == 1.0):  # holo makes the same self-check
            raise RuntimeError(f"the constructed optimal solution scores {value[0]}, not 1")
        return x

    def random_solution(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, L) uniform random states (mostly infeasible) drawn from ``generator``."""
        return torch.randint(self.num_states, (int(n), self.dim), generator=generator)

    # ------------------------------------------------------------------ evaluation
    def _as_batch(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``x`` as an (n, L) integer numpy array (shape and dtype checked, range not yet)."""
        if isinstance(x, torch.Tensor):
            if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                raise ValueError(
                    f"sequences must be an integer tensor of states, got dtype {x.dtype}"
                )
            arr = x.detach().cpu().numpy()
        else:
            arr = np.asarray(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"sequences must be an (n, {self.dim}) tensor, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise ValueError(
                f"sequences must be an integer tensor of states, got dtype {arr.dtype}"
            )
        if arr.shape[1] != self.dim:
            raise ValueError(f"sequences must have length {self.dim}, got length {arr.shape[1]}")
        return arr

    def _check_range(self, arr: np.ndarray) -> None:
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_states):
            raise ValueError(
                f"states must lie in [0, {self.num_states}), got values from {int(arr.min())} "
                f"to {int(arr.max())}"
            )

    def validate(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as an (n, L) int64 tensor; raises ``ValueError`` saying what is wrong."""
        arr = self._as_batch(x)
        self._check_range(arr)
        return torch.as_tensor(arr, dtype=torch.int64)

    def is_feasible(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) bool: True where no transition of the row is banned by the transition matrix."""
        return self.evaluate(x)[1]

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, feasible)`` for an (n, L) batch (a 1-D sequence counts as one row):
        float32 values, 0 where infeasible."""
        arr = self._as_batch(x)
        n = arr.shape[0]
        values = np.zeros(n, dtype=np.float32)
        feasible = np.zeros(n, dtype=np.bool_)
        for start in range(0, n, EVAL_CHUNK):
            chunk = arr[start : start + EVAL_CHUNK]
            self._check_range(chunk)
            self._evaluate_chunk(
                chunk, values[start : start + len(chunk)], feasible[start : start + len(chunk)]
            )
        return torch.from_numpy(values), torch.from_numpy(feasible)

    def _evaluate_chunk(self, chunk: np.ndarray, values: np.ndarray, feasible: np.ndarray) -> None:
        """The kernel on one chunk, written into ``values`` and ``feasible``.

        numpy, single-threaded, positions-major small integers: transposed to (L, n), each
        position is one contiguous run of bytes and every motif element is one vectorized compare
        over the valid starts. numpy's fancy indexing into the banned-transition table is several
        times faster than torch's, and torch's thread hand-offs on these small arrays cost more
        than the work on a busy machine.
        """
        u = np.ascontiguousarray(chunk.astype(self._state_dtype, copy=False).T)
        width = u.shape[1]
        pairs = u[:-1].astype(self._pair_dtype)
        # numpy's stubs lose the integer dtype of astype(self._pair_dtype): the ignores say so.
        pairs *= self.num_states  # type: ignore[misc]
        pairs += u[1:]  # type: ignore[misc]
        np.equal(np.bitwise_or.reduce(np.take(self._banned_u8, pairs), axis=0), 0, out=feasible)  # type: ignore[arg-type]

        equal = np.empty((self.dim, width), dtype=np.bool_)
        responses = np.empty((self.num_motifs, width), dtype=np.float32)
        for i, (motif, offsets) in enumerate(zip(self._motif_states, self._motif_offsets)):
            starts = self.dim - offsets[-1]  # every start l with l + s_{k-1} < L
            count = np.equal(u[offsets[0] : offsets[0] + starts], motif[0]).view(np.uint8)
            for state, offset in zip(motif[1:], offsets[1:]):
                np.equal(u[offset : offset + starts], state, out=equal[:starts])
                count += equal[:starts].view(np.uint8)
            # quantization is monotone, so quantize the best count: one table lookup per row
            np.take(self._response_np, count.max(axis=0), out=responses[i])
        # holo takes stack(responses).prod(0) in float32; torch's and numpy's reductions over the
        # first axis both multiply motif by motif in order, so the products are bit-identical
        np.multiply.reduce(responses, axis=0, out=values)
        values[~feasible] = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) float32 values of an (n, L) integer batch; infeasible rows score 0."""
        return self.evaluate(x)[0]

    def __repr__(self) -> str:
        motifs = ", ".join(str(m.tolist()) for m in self.motifs)
        gaps = ", ".join(str(s.tolist()) for s in self.spacings)
        return (
            f"Ehrlich(num_states={self.num_states}, dim={self.dim}, num_motifs={self.num_motifs}, "
            f"motif_length={self.motif_length}, quantization={self.quantization}, "
            f"epistasis_factor={self.epistasis_factor}, random_seed={self.random_seed}, "
            f"motifs=[{motifs}], spacings=[{gaps}])"
        )


def preset_config(name: str, random_seed: int = PAPER_SEED) -> EhrlichConfig:
    """The :class:`EhrlichConfig` of a preset name (``ehr_v-32_l-032_m-4_c-4_q-4`` style)."""
    m = _PRESET_RE.match(name.strip())
    if not m:
        raise ValueError(
            f"{name!r} is not a preset name like 'ehr_v-32_l-032_m-4_c-4_q-4'; "
            f"known presets: {', '.join(PRESETS)}"
        )
    v, length, motifs, motif_length, q = (int(g) for g in m.groups())
    return EhrlichConfig(v, length, motifs, motif_length, q, random_seed=random_seed)


def _check_parameters(
    num_states: int,
    dim: int,
    num_motifs: int,
    motif_length: int,
    quantization: int | None,
    epistasis_factor: float,
) -> None:
    for name, value, low in (
        ("num_states", num_states, 2),
        ("dim", dim, 2),
        ("num_motifs", num_motifs, 1),
        ("motif_length", motif_length, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_motifs * motif_length > dim:
        raise ValueError(
            f"num_motifs * motif_length = {num_motifs * motif_length} exceeds dim = {dim}: "
            "the motifs cannot all fit in one sequence"
        )
    if quantization is not None:
        if (
            isinstance(quantization, bool)
            or not isinstance(quantization, numbers.Integral)
            or quantization < 1
        ):
            raise ValueError(
                f"quantization must be a positive integer or None, got {quantization!r}"
            )
        if motif_length % quantization != 0:
            raise ValueError(
                f"quantization {quantization} must divide motif_length {motif_length} "
                "(otherwise the optimum cannot score 1)"
            )
    if not isinstance(epistasis_factor, numbers.Real) or not math.isfinite(epistasis_factor):
        raise ValueError(f"epistasis_factor must be finite, got {epistasis_factor!r}")
