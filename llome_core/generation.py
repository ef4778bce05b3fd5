"""Iterative refinement, the inner loop of LLOME (``shared/spec/algorithm.md`` §3.4), and the
automatic temperature schedule (§3.5).

Trajectories: for every seed, one greedy run (1 output per step) and one sampling run per
temperature (``samples_per_step`` outputs per step), ``num_steps`` steps each. The input of a step
is the highest-likelihood valid output of that trajectory so far (any earlier step, this one
included for the next), or the seed while there is none.

Every step decodes the rows of *all* trajectories together (seeds x runs x samples), in chunks of
``GenerateConfig.batch_size`` rows, with a KV cache.

Two decoders:

- **Constrained** (our word-level tokenizer, or any tokenizer with one token per state, bracket,
  separator, ``<inc>`` and newline that tokenizes the format exactly so): the answer template
  ``[ S , S , ... , S ]`` is walked in a hand-written loop over ``model(...)`` with
  ``past_key_values``. Brackets and separators are forced, and each state slot samples among the
  ``v`` state tokens only, so every output is valid: no sample is wasted on a parse failure. Forced
  tokens are fed together with the state before them (one forward of 2 tokens per state in the
  json format), so an answer of L states costs L forward passes. Greedy picks the argmax among the
  states, which is the unconstrained argmax whenever plain greedy ``generate`` is well-formed.
- **Fallback** (a foreign tokenizer, e.g. a pretrained BPE): ``model.generate`` with sampling,
  stopped per row at the first token containing ``]``, then :meth:`TextFormat.parse`; failures are
  counted by reason.

Log-likelihood (both decoders, the same definition): the mean over the cut answer's tokens
(``[`` through the first ``]``, forced tokens included) of ``log_softmax(logits / T)`` over the
*full* vocabulary, ``T`` the run's temperature (1 for greedy). It is the model's own scaled
likelihood of the text, as in the spec, not the constrained-renormalized one (under which forced
tokens would score 0 and format-unsure outputs would rank too high).

Randomness: one 62-bit seed is drawn from the caller's ``generator``; all sampling draws come from
a generator on the model's device seeded with it (Gumbel-max sampling with ``torch.rand``, so
per-row temperatures vectorize). The same generator state, model, inputs and config give the same
candidates on the same device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llome_core.config import GenerateConfig
from llome_core.optimizer import Candidate
from llome_core.progress import Reporter, null_reporter
from llome_core.rng import derive_seed
from llome_core.text import CLOSE, NEWLINE, PROMPT_TAG, ParseError, TextFormat

# §3.5: (previous mean distance below this) -> first temperature; six temperatures 0.2 apart.
_SCHEDULE: tuple[tuple[float, float], ...] = ((0.075, 1.2), (0.1, 1.0), (0.15, 0.8))
_DEFAULT_START = 0.6
_NUM_TEMPERATURES, _TEMPERATURE_STEP = 6, 0.2


def temperatures_for(prev_mean_distance: float | None) -> tuple[float, ...]:
    """The six sampling temperatures of the next round from the previous round's mean output-input
    normalized Hamming distance (``None``: no previous round in this training stage)."""
    start = _DEFAULT_START
    if prev_mean_distance is not None:
        for below, first in _SCHEDULE:
            if prev_mean_distance < below:
                start = first
                break
    return tuple(round(start + _TEMPERATURE_STEP * i, 6) for i in range(_NUM_TEMPERATURES))


@dataclass
class Decoded:
    """Decoded rows: ``outputs`` (n, L) long (zeros where not valid), ``log_likelihood`` (n,)
    float64 (length-normalized, see the module docstring), ``valid`` (n,) bool, and parse
    failures counted by reason."""

    outputs: torch.Tensor  # (n, L) long, garbage where not valid
    log_likelihood: torch.Tensor  # (n,) float64
    valid: torch.Tensor  # (n,) bool
    failures: dict[str, int]


# --------------------------------------------------------------------------- constrained decoding
@dataclass(frozen=True)
class _FormatIds:
    """Token ids of the format for a tokenizer that writes it one token per symbol."""

    states: torch.Tensor  # (v,) token id of each state
    prompt_template: torch.Tensor  # (P,) ids, -1 at state slots
    prompt_slots: torch.Tensor  # (L,) positions of the slots in the prompt
    answer_segments: tuple[tuple[int, ...], ...]  # literal ids before slot 1, after each slot


def format_ids(
    tokenizer: PreTrainedTokenizerBase, fmt: TextFormat, num_states: int, dim: int
) -> _FormatIds | None:
    """The format's token ids if the tokenizer writes every symbol as one token and tokenizes
    prompts and answers exactly as the template says; ``None`` otherwise (use the fallback)."""
    vocab = tokenizer.get_vocab()
    symbols = [PROMPT_TAG, NEWLINE, *[t for t in fmt.answer_template(1) if t is not None]]
    if fmt.separator:
        symbols.append(fmt.separator)
    states = [str(i) for i in range(num_states)]
    if any(s not in vocab for s in symbols + states):
        return None
    ids = {s: vocab[s] for s in symbols + states}
    if len(set(ids.values())) != len(ids):
        return None
    template = fmt.answer_template(dim)
    prompt_tokens = [PROMPT_TAG, *template, NEWLINE]
    prompt_template = torch.tensor([-1 if t is None else ids[t] for t in prompt_tokens])
    slots = (prompt_template < 0).nonzero().reshape(-1)
    segments: list[list[int]] = [[]]
    for t in template:
        if t is None:
            segments.append([])
        else:
            segments[-1].append(ids[t])
    fids = _FormatIds(
        states=torch.tensor([ids[s] for s in states]),
        prompt_template=prompt_template,
        prompt_slots=slots,
        answer_segments=tuple(tuple(s) for s in segments),
    )
    # The tokenizer must agree with the template, special tokens (BOS) and all.
    probes = [
        [i % num_states for i in range(dim)],
        [(num_states - 1 - i) % num_states for i in range(dim)],
    ]
    for x in probes:
        want = _prompt_ids(fids, torch.tensor([x]))[0].tolist()
        want += [
            vocab[t] if t is not None else int(fids.states[y])
            for t, y in _zip_template(template, x)
        ]
        got = tokenizer(fmt.prompt(x) + fmt.answer(x))["input_ids"]
        if list(got) != want:
            return None
    return fids


def _zip_template(template: list[str | None], x: list[int]) -> list[tuple[str | None, int]]:
    it = iter(x)
    return [(t, next(it) if t is None else -1) for t in template]


def _prompt_ids(fids: _FormatIds, inputs: torch.Tensor) -> torch.Tensor:
    """``(n, P)`` prompt token ids for ``(n, L)`` inputs, built by indexing (no tokenizer call)."""
    ids = fids.prompt_template.to(inputs.device).expand(inputs.shape[0], -1).clone()
    ids[:, fids.prompt_slots.to(inputs.device)] = fids.states.to(inputs.device)[inputs]
    return ids


@torch.inference_mode()
def _decode_constrained(
    model: PreTrainedModel,
    fids: _FormatIds,
    inputs: torch.Tensor,
    temps: torch.Tensor,
    noise_gen: torch.Generator,
) -> Decoded:
    """One chunk: every row an answer of exactly L in-alphabet states (see the module docstring)."""
    device = inputs.device
    n, dim = inputs.shape
    state_ids = fids.states.to(device)
    greedy = temps <= 0
    scale = torch.where(greedy, torch.ones_like(temps), temps).float()[:, None, None]
    segs = fids.answer_segments
    num_tokens = sum(len(s) for s in segs) + dim

    def logp_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # (n, m, V) logits, (n, m) targets -> (n,) summed temperature-scaled log-probabilities
        lp = torch.log_softmax(logits.float() / scale, dim=-1)
        return lp.gather(-1, targets[..., None]).squeeze(-1).double().sum(-1)

    lits = [torch.tensor(seg, device=device, dtype=torch.long).expand(n, -1) for seg in segs]
    # Rows often share a prompt (the samples of one trajectory; every run at step 1): prefill each
    # distinct prompt once, then copy its keys and values to its rows.
    uniq, inverse = torch.unique(inputs, dim=0, return_inverse=True)

    def prefill(prompts: torch.Tensor) -> tuple[StaticCache, torch.Tensor, int]:
        feed = torch.cat([_prompt_ids(fids, prompts), lits[0][: prompts.shape[0]]], dim=1)
        # A preallocated cache: no per-token concatenation of keys and values (2x faster on CPU
        # than DynamicCache at L = 32), and the fixed shapes a compiled decode step needs.
        cache = StaticCache(config=model.config, max_cache_len=feed.shape[1] + num_tokens)
        out = model(
            input_ids=feed,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=lits[0].shape[1] + 1,
            cache_position=torch.arange(feed.shape[1], device=device),
        )
        return cache, out.logits, feed.shape[1]

    if uniq.shape[0] < n:
        cache, logits, pos = prefill(uniq)
        if _expand_static_cache(cache, inverse):
            logits = logits[inverse]
        else:
            cache, logits, pos = prefill(inputs)
    else:
        cache, logits, pos = prefill(inputs)
    ll = (
        logp_of(logits[:, :-1], lits[0])
        if lits[0].shape[1]
        else torch.zeros(n, dtype=torch.float64, device=device)
    )
    chosen = torch.empty(n, dim, dtype=torch.long, device=device)
    for i in range(dim):
        state_logits = logits[:, -1].float()[:, state_ids]  # (n, v)
        noise = torch.rand(state_logits.shape, generator=noise_gen, device=device)
        gumbel = -torch.log(-torch.log(noise.clamp_min(torch.finfo(noise.dtype).tiny)))
        pick = torch.where(
            greedy,
            state_logits.argmax(-1),
            (state_logits / scale[:, 0] + gumbel).argmax(-1),
        )
        chosen[:, i] = pick
        token = state_ids[pick]
        ll += logp_of(logits[:, -1:], token[:, None])
        after = lits[i + 1]
        # The final literal (']') need not be fed: only its probability is wanted.
        step_in = torch.cat([token[:, None], after[:, :-1] if i == dim - 1 else after], dim=1)
        out = model(
            input_ids=step_in,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(pos, pos + step_in.shape[1], device=device),
        )
        pos += step_in.shape[1]
        logits = out.logits
        if after.shape[1]:
            ll += logp_of(logits[:, : after.shape[1]], after)
    return Decoded(
        outputs=chosen,
        log_likelihood=ll / num_tokens,
        valid=torch.ones(n, dtype=torch.bool, device=device),
        failures={},
    )


def _expand_static_cache(cache: StaticCache, index: torch.Tensor) -> bool:
    """Make rows ``index`` of a prefilled static cache its batch (shared-prompt prefill).

    Returns False, touching nothing, if this transformers' cache layers do not keep plain
    ``keys``/``values`` tensors; the caller then prefills every row.
    """
    layers = getattr(cache, "layers", None)
    if not layers or not all(
        isinstance(getattr(la, "keys", None), torch.Tensor)
        and isinstance(getattr(la, "values", None), torch.Tensor)
        for la in layers
    ):
        return False
    for layer in layers:
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
        layer.batch_size = int(index.shape[0])
    return True


# ------------------------------------------------------------------------------------- fallback
class _StopAtClose(StoppingCriteria):
    """Stops each row once it has produced a token containing ``]``."""

    def __init__(self, close_mask: torch.Tensor) -> None:
        self.close_mask = close_mask

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return self.close_mask[input_ids[:, -1]]


def _close_mask(
    tokenizer: PreTrainedTokenizerBase, size: int, device: torch.device
) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    for tok, i in tokenizer.get_vocab().items():
        if i < size and CLOSE in tokenizer.convert_tokens_to_string([tok]):
            mask[i] = True
    return mask.to(device)


@torch.inference_mode()
def _decode_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: TextFormat,
    inputs: torch.Tensor,
    temperature: float,
    *,
    num_states: int,
    max_new_tokens: int,
    seed: int,
    close_mask: torch.Tensor,
) -> Decoded:
    """One chunk at one temperature with ``model.generate``; outputs parsed by ``fmt``."""
    device = inputs.device
    n, dim = inputs.shape
    enc = tokenizer(
        [fmt.prompt(x) for x in inputs.tolist()],
        return_tensors="pt",
        padding=True,
        padding_side="left",
    ).to(device)
    gc = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        # Pure temperature sampling: switch off the library's default top-k (50) and anything a
        # foreign model's generation_config.json would otherwise add.
        **({"temperature": temperature, "top_k": 0} if temperature > 0 else {}),
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    # generate samples from the global RNG: fork it, so our seed decides and no other stream moves.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(
            **enc,
            generation_config=gc,
            stopping_criteria=StoppingCriteriaList([_StopAtClose(close_mask)]),
        )
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    scale = temperature if temperature > 0 else 1.0
    logits = torch.stack(out.logits, dim=1).float() / scale  # (n, T, V)
    lp = torch.log_softmax(logits, -1).gather(-1, new[..., None]).squeeze(-1).double()
    # The cut answer: tokens up to and including the first one containing ']'.
    is_close = close_mask[new]
    has_close = is_close.any(-1)
    cut = torch.where(
        has_close,
        is_close.int().argmax(-1) + 1,
        torch.full_like(has_close, new.shape[1], dtype=torch.long),
    )
    within = torch.arange(new.shape[1], device=device)[None, :] < cut[:, None]
    ll = (lp * within).sum(-1) / cut.clamp_min(1)
    outputs = torch.zeros(n, dim, dtype=torch.long)
    valid = torch.zeros(n, dtype=torch.bool)
    failures: dict[str, int] = {}
    texts = tokenizer.batch_decode(new.cpu(), skip_special_tokens=True)
    for r, text in enumerate(texts):  # the slow path only: one parse per foreign generation
        try:
            outputs[r] = torch.tensor(fmt.parse(text, num_states, dim))
            valid[r] = True
        except ParseError as e:
            failures[e.reason] = failures.get(e.reason, 0) + 1
    return Decoded(outputs.to(device), ll, valid.to(device), failures)


# ------------------------------------------------------------------------------------ decoding
class _Decoder:
    """Decodes chunks of rows with the constrained path when the tokenizer allows it, else with
    ``generate``; all randomness from one seed."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        fmt: TextFormat,
        *,
        num_states: int,
        dim: int,
        seed: int,
        max_new_tokens: int,
        constrained: bool | None,
    ) -> None:
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.num_states, self.dim, self.seed, self.max_new_tokens = (
            num_states,
            dim,
            seed,
            max_new_tokens,
        )
        self.device = next(model.parameters()).device
        self.fids = None if constrained is False else format_ids(tokenizer, fmt, num_states, dim)
        if constrained and self.fids is None:
            raise ValueError(
                "constrained decoding needs one token per state, bracket, separator, <inc> and "
                "newline (our word-level tokenizer); this tokenizer does not write the format so"
            )
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(seed)
        self.close_mask = (
            None
            if self.fids is not None
            else _close_mask(tokenizer, model.get_output_embeddings().weight.shape[0], self.device)
        )

    @property
    def constrained(self) -> bool:
        return self.fids is not None

    def __call__(self, inputs: torch.Tensor, temps: torch.Tensor, *names: object) -> Decoded:
        """Decode one chunk; ``names`` name the fallback's random stream (the constrained path
        draws its noise sequentially from one device generator)."""
        if self.fids is not None:
            return _decode_constrained(self.model, self.fids, inputs, temps, self.noise_gen)
        assert self.close_mask is not None
        n, dim = inputs.shape
        outputs = torch.zeros(n, dim, dtype=torch.long, device=self.device)
        ll = torch.zeros(n, dtype=torch.float64, device=self.device)
        valid = torch.zeros(n, dtype=torch.bool, device=self.device)
        failures: dict[str, int] = {}
        for t in torch.unique(temps).tolist():  # generate takes one temperature per call
            idx = (temps == t).nonzero().reshape(-1)
            d = _decode_generate(
                self.model,
                self.tokenizer,
                self.fmt,
                inputs[idx],
                float(t),
                num_states=self.num_states,
                max_new_tokens=self.max_new_tokens,
                seed=derive_seed(self.seed, *names, t),
                close_mask=self.close_mask,
            )
            outputs[idx], ll[idx], valid[idx] = d.outputs, d.log_likelihood, d.valid
            for reason, cnt in d.failures.items():
                failures[reason] = failures.get(reason, 0) + cnt
        return Decoded(outputs, ll, valid, failures)


def _merge(parts: list[Decoded]) -> Decoded:
    failures: dict[str, int] = {}
    for p in parts:
        for reason, cnt in p.failures.items():
            failures[reason] = failures.get(reason, 0) + cnt
    return Decoded(
        torch.cat([p.outputs for p in parts]),
        torch.cat([p.log_likelihood for p in parts]),
        torch.cat([p.valid for p in parts]),
        failures,
    )


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: TextFormat,
    inputs: torch.Tensor,
    temperatures: torch.Tensor | float,
    *,
    num_states: int,
    generator: torch.Generator,
    batch_size: int = 256,
    max_new_tokens: int = 512,
    constrained: bool | None = None,
) -> Decoded:
    """One answer per row of ``inputs`` (n, L) at per-row ``temperatures`` (0 = greedy).

    ``constrained``: ``None`` uses the constrained decoder when the tokenizer allows it, ``False``
    forces ``generate`` + parse, ``True`` fails if the tokenizer cannot be constrained.
    """
    inputs = torch.as_tensor(inputs, dtype=torch.long)
    n, dim = inputs.shape
    dec = _Decoder(
        model,
        tokenizer,
        fmt,
        num_states=num_states,
        dim=dim,
        seed=_draw_seed(generator),
        max_new_tokens=max_new_tokens,
        constrained=constrained,
    )
    temps = torch.as_tensor(temperatures, dtype=torch.float32).expand(n).to(dec.device)
    inputs = inputs.to(dec.device)
    with _eval_mode(model):
        parts = [
            dec(inputs[i : i + batch_size], temps[i : i + batch_size], i)
            for i in range(0, n, max(1, batch_size))
        ]
    return _merge(parts)


class _eval_mode:
    """Evaluation mode for the duration, the caller's mode restored after (dropout off)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


# ------------------------------------------------------------------------------------ refinement
@dataclass
class Trace:
    """Every decoded row of a refinement, in decoding order (step-major): for metrics, calibration
    and tests. ``trajectory`` indexes ``(run, seed)`` as ``run * s + seed``; run 0 is greedy when
    greedy decoding is on; ``temperature`` 0 marks greedy rows."""

    outputs: torch.Tensor  # (N, L)
    parents: torch.Tensor  # (N, L)
    trajectory: torch.Tensor  # (N,)
    step: torch.Tensor  # (N,) 1-based
    temperature: torch.Tensor  # (N,)
    log_likelihood: torch.Tensor  # (N,)
    valid: torch.Tensor  # (N,)


@dataclass
class Refinement:
    """The pooled, de-duplicated outputs of one inner loop and how they were made.

    ``metrics``: ``num_generated`` (every decoded output, failures included), ``num_valid``,
    ``num_unique``, ``parse_fail_frac``, ``unique_frac`` (distinct valid outputs / valid outputs),
    ``mean_edit_distance`` (mean normalized Hamming distance of every valid output to its input:
    the statistic of §3.5), ``mean_log_likelihood``, ``constrained`` (1.0 or 0.0), ``seconds``,
    ``sequences_per_s`` and ``parse_fail_<reason>`` counts. ``per_step`` holds the same for each
    refinement step. ``trace`` holds every row when ``keep_trace=True``.
    """

    candidates: list[Candidate]
    metrics: dict[str, float] = field(default_factory=dict)
    per_step: list[dict[str, float]] = field(default_factory=list)
    trace: Trace | None = None


def refine(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: TextFormat,
    seeds: torch.Tensor,
    *,
    num_states: int,
    dim: int,
    config: GenerateConfig,
    temperatures: tuple[float, ...] | list[float],
    generator: torch.Generator,
    reporter: Reporter | None = None,
    constrained: bool | None = None,
    keep_trace: bool = False,
) -> Refinement:
    """Refine ``seeds`` (s, L) for ``config.num_steps`` steps (§3.4); returns pooled candidates.

    Rows of all trajectories are decoded together, ``config.batch_size`` rows per forward batch.
    Candidates are pooled run-major (greedy first, then temperatures in the given order), then by
    step, then by seed; the first occurrence of each sequence is kept.
    ``constrained``: as in :func:`decode`. Reports ``("generate", chunks done, chunks)``.
    """
    reporter = reporter or null_reporter
    t0 = time.perf_counter()
    seeds = torch.as_tensor(seeds, dtype=torch.long)
    if seeds.ndim != 2 or seeds.shape[1] != dim:
        raise ValueError(f"seeds must be (s, {dim}), got shape {tuple(seeds.shape)}")
    if seeds.numel() and (seeds.min() < 0 or seeds.max() >= num_states):
        raise ValueError(f"seed states must lie in [0, {num_states})")
    temps = [float(t) for t in temperatures]
    if any(t <= 0 for t in temps):
        raise ValueError(f"sampling temperatures must be > 0, got {temps}")
    runs: list[float] = ([0.0] if config.greedy else []) + temps  # 0.0 marks the greedy run
    if not runs or seeds.shape[0] == 0 or config.num_steps < 1:
        raise ValueError("nothing to decode: no seeds, no steps, or greedy off and no temperatures")
    dec = _Decoder(
        model,
        tokenizer,
        fmt,
        num_states=num_states,
        dim=dim,
        seed=_draw_seed(generator),
        max_new_tokens=config.max_new_tokens,
        constrained=constrained,
    )
    device = dec.device

    s, k = seeds.shape[0], config.samples_per_step
    # Trajectory j = (run r, seed i), j = r * s + i, with k_r rows per step (1 for greedy).
    traj_run = torch.arange(len(runs)).repeat_interleave(s)
    traj_seed = torch.arange(s).repeat(len(runs))
    per_run = torch.tensor([1 if t == 0.0 else k for t in runs])
    row_traj = torch.arange(len(traj_run)).repeat_interleave(per_run[traj_run])
    row_temp = torch.tensor(runs, dtype=torch.float32)[traj_run[row_traj]]
    num_rows, num_traj = row_traj.shape[0], traj_run.shape[0]
    chunk = max(1, int(config.batch_size))
    chunks_per_step = (num_rows + chunk - 1) // chunk
    total = config.num_steps * chunks_per_step

    current = seeds.to(device)[traj_seed.to(device)]  # (R, L): each trajectory's next input
    best_ll = torch.full((num_traj,), float("-inf"), dtype=torch.float64, device=device)
    row_traj_d, row_temp_d = row_traj.to(device), row_temp.to(device)
    rows_d = torch.arange(num_rows, device=device)

    recs: dict[str, list[torch.Tensor]] = {n: [] for n in ("out", "parent", "ll", "valid")}
    failures: dict[str, int] = {}
    per_step: list[dict[str, float]] = []
    seen: set[tuple[int, ...]] = set()
    with _eval_mode(model):
        for step in range(1, config.num_steps + 1):
            inputs = current[row_traj_d]
            parts = []
            for c in range(chunks_per_step):
                sl = slice(c * chunk, (c + 1) * chunk)
                parts.append(dec(inputs[sl], row_temp_d[sl], step, c))
                reporter("generate", (step - 1) * chunks_per_step + c + 1, total)
            d = _merge(parts)
            for reason, cnt in d.failures.items():
                failures[reason] = failures.get(reason, 0) + cnt
            for name, t in (
                ("out", d.outputs),
                ("parent", inputs),
                ("ll", d.log_likelihood),
                ("valid", d.valid),
            ):
                recs[name].append(t.cpu())
            per_step.append(_step_stats(step, d, inputs, seen))

            # Next input: the trajectory's highest-likelihood valid output so far (ties: earliest).
            masked = torch.where(d.valid, d.log_likelihood, float("-inf"))
            step_best = torch.full_like(best_ll, float("-inf")).scatter_reduce(
                0, row_traj_d, masked, "amax"
            )
            is_best = d.valid & (masked == step_best[row_traj_d])
            first_row = torch.full((num_traj,), num_rows - 1, dtype=torch.long, device=device)
            first_row = first_row.scatter_reduce(
                0, row_traj_d, torch.where(is_best, rows_d, num_rows - 1), "amin"
            )
            better = step_best > best_ll
            best_ll = torch.where(better, step_best, best_ll)
            current = torch.where(better[:, None], d.outputs[first_row], current)

    steps = config.num_steps
    trace = Trace(
        outputs=torch.cat(recs["out"]),
        parents=torch.cat(recs["parent"]),
        trajectory=row_traj.repeat(steps),
        step=torch.arange(1, steps + 1).repeat_interleave(num_rows),
        temperature=row_temp.repeat(steps),
        log_likelihood=torch.cat(recs["ll"]),
        valid=torch.cat(recs["valid"]),
    )
    refinement = _pool(trace, seeds, traj_seed, traj_run, runs)
    seconds = time.perf_counter() - t0
    n_gen = num_rows * steps
    m = refinement.metrics
    m.update(
        num_generated=float(n_gen),
        parse_fail_frac=(n_gen - m["num_valid"]) / n_gen,
        constrained=1.0 if dec.constrained else 0.0,
        seconds=seconds,
        sequences_per_s=n_gen / seconds if seconds > 0 else float("inf"),
    )
    for reason, cnt in sorted(failures.items()):
        m[f"parse_fail_{reason}"] = float(cnt)
    refinement.per_step = per_step
    refinement.trace = trace if keep_trace else None
    return refinement


def _step_stats(
    step: int, d: Decoded, inputs: torch.Tensor, seen: set[tuple[int, ...]]
) -> dict[str, float]:
    n, nv = d.valid.shape[0], int(d.valid.sum())
    before = len(seen)
    seen.update(map(tuple, d.outputs[d.valid].tolist()))
    return {
        "step": float(step),
        "num_generated": float(n),
        "parse_fail_frac": (n - nv) / n if n else 0.0,
        "mean_edit_distance": float((d.outputs[d.valid] != inputs[d.valid]).double().mean())
        if nv
        else float("nan"),
        "mean_log_likelihood": float(d.log_likelihood[d.valid].mean()) if nv else float("nan"),
        "new_unique": float(len(seen) - before),
        **{f"parse_fail_{r}": float(c) for r, c in sorted(d.failures.items())},
    }


def _pool(
    trace: Trace,
    seeds: torch.Tensor,
    traj_seed: torch.Tensor,
    traj_run: torch.Tensor,
    runs: list[float],
) -> Refinement:
    """Pool the valid rows run-major (greedy first), then by step; keep first occurrences."""
    run = traj_run[trace.trajectory]
    order = torch.argsort(run * (int(trace.step.max()) + 1) + trace.step, stable=True)
    order = order[trace.valid[order]]
    num_valid = order.shape[0]
    metrics: dict[str, float] = {"num_valid": float(num_valid)}
    if num_valid == 0:
        metrics.update(
            num_unique=0.0,
            unique_frac=0.0,
            mean_edit_distance=float("nan"),
            mean_log_likelihood=float("nan"),
        )
        return Refinement([], metrics)
    pooled = trace.outputs[order]
    _, inverse = torch.unique(pooled, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), num_valid, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(num_valid), "amin")
    keep = order[first.sort().values]
    metrics.update(
        num_unique=float(keep.shape[0]),
        unique_frac=keep.shape[0] / num_valid,
        mean_edit_distance=float((pooled != trace.parents[order]).double().mean()),
        mean_log_likelihood=float(trace.log_likelihood[order].mean()),
    )
    seed_rows = seeds[traj_seed[trace.trajectory[keep]]].tolist()
    temps = [None if runs[r] == 0.0 else runs[r] for r in run[keep].tolist()]
    candidates = [
        Candidate(
            sequence=tuple(o),
            parent=tuple(p),
            seed=tuple(sd),
            refinement_step=st,
            temperature=t,
            log_likelihood=lk,
        )
        for o, p, sd, st, t, lk in zip(
            trace.outputs[keep].tolist(),
            trace.parents[keep].tolist(),
            seed_rows,
            trace.step[keep].tolist(),
            temps,
            trace.log_likelihood[keep].tolist(),
        )
    ]
    return Refinement(candidates, metrics)
