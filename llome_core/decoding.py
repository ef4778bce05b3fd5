"""Decoders: one answer per input row, with its log-likelihood (``shared/spec/algorithm.md`` §3.4).

Two decoders, chosen by ``GenerateConfig.decoding``:

- **Constrained** (ours; needs a tokenizer with one token per state, bracket, separator, ``<inc>``
  and newline that tokenizes the format exactly so, as our word-level one does): the answer
  template ``[ S , S , ... , S ]`` is walked with a KV cache. Brackets and separators are forced,
  and each state slot samples among the ``v`` state tokens only, so every output is valid: no
  sample is wasted on a parse failure. Forced tokens are fed together with the state before them
  (one forward of 2 tokens per state in the json format), so an answer of L states costs L
  forward passes. Greedy picks the argmax among the states, which is the unconstrained argmax
  whenever plain greedy ``generate`` is well-formed. Rows sharing a prompt are prefilled once.
- **Free** (the paper's; also the only one for a foreign tokenizer such as a pretrained BPE):
  each token sampled from the full vocabulary, stopped per row at the first token containing
  ``]``, then :meth:`TextFormat.parse`; failures are counted by reason and their rows marked not
  valid. With our tokenizer it runs on the walk's engine (shared prefill, per-row temperatures,
  one token per forward: 2.2x less CPU than ``generate`` on the same rows here); with any other,
  ``model.generate``.

The constrained walk runs on one of two engines: for a GPT-NeoX model (our tiny default and its
checkpoints) a pure-torch incremental forward over preallocated key/value buffers (no per-step
cache objects, masks or copies: the shapes decide the speed on a CPU); for any other model
``model(...)`` with a transformers ``StaticCache``. Both compute the same function.

Log-likelihood (both decoders, the same definition): the mean over the cut answer's tokens
(``[`` through the first ``]``, forced tokens included) of ``log_softmax(logits / T)`` over the
*full* vocabulary, ``T`` the row's temperature (1 for greedy). It is the model's own scaled
likelihood of the text, as in the spec, not the constrained-renormalized one (under which forced
tokens would score 0 and format-unsure outputs would rank too high).

Precision: fp32 by default; ``precision="bf16"`` decodes with a bfloat16 copy of the model
(weights, activations and the key/value buffers; log-likelihoods and sampling in fp32 from its
logits). On a CPU with AVX512-BF16 its matmuls run at about 2.5x fp32's rate, and the walk took
1.6x less CPU; 99.5% of the sampled states equalled fp32's at the same noise (the rest are near
ties), greedy included. Greedy is the argmax of the copy's own logits.

Randomness: a :class:`Decoder` takes one seed; both walks draw their Gumbel noise from a device
generator seeded with it (Gumbel-max sampling, so per-row temperatures vectorize), the
``generate`` path forks the global RNG per chunk and temperature with a seed derived from it. The same
seed, model, inputs and config give the same outputs on the same device.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import torch
import torch.nn.functional as F
from transformers import (
    GenerationConfig,
    GPTNeoXForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llome_core.modeling import forward_flops
from llome_core.rng import derive_seed
from llome_core.text import CLOSE, NEWLINE, PROMPT_TAG, ParseError, TextFormat

Decoding = Literal["constrained", "free"]
Precision = Literal["fp32", "bf16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Tokens a free answer may take beyond the well-formed answer's length before it is cut (a
# longer one cannot parse: every state, bracket and separator is one token of ours).
FREE_SLACK_TOKENS = 4
# Share a prompt's keys and values across its rows when they average at least this many rows per
# block (below, a copy per row costs less than the regrouping).
MIN_ROWS_PER_BLOCK = 2


@dataclass
class Decoded:
    """Decoded rows: ``outputs`` (n, L) long (zeros where not valid), ``log_likelihood`` (n,)
    float64 (length-normalized, see the module docstring), ``valid`` (n,) bool, and parse
    failures counted by reason."""

    outputs: torch.Tensor  # (n, L) long, garbage where not valid
    log_likelihood: torch.Tensor  # (n,) float64
    valid: torch.Tensor  # (n,) bool
    failures: dict[str, int]

    @staticmethod
    def concat(parts: list[Decoded]) -> Decoded:
        """Rows of ``parts`` in order, failures summed."""
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


@dataclass
class DecodeCost:
    """Work of the constrained walk so far: tokens fed, FLOPs (:func:`forward_flops`, causal
    attention) and wall seconds, for the prefill of distinct prompts and for the walk itself."""

    rows: int = 0
    prefill_tokens: int = 0
    prefill_flops: int = 0
    prefill_seconds: float = 0.0
    prefill_cpu_seconds: float = 0.0  # process CPU time, all threads
    decode_tokens: int = 0
    decode_flops: int = 0
    decode_seconds: float = 0.0
    decode_cpu_seconds: float = 0.0


# --------------------------------------------------------------------------- the format's ids
@dataclass(frozen=True)
class FormatIds:
    """Token ids of the format for a tokenizer that writes it one token per symbol."""

    states: torch.Tensor  # (v,) token id of each state
    prompt_template: torch.Tensor  # (P,) ids, -1 at state slots
    prompt_slots: torch.Tensor  # (L,) positions of the slots in the prompt
    answer_segments: tuple[tuple[int, ...], ...]  # literal ids before slot 1, after each slot

    @property
    def answer_length(self) -> int:
        """Tokens of an answer, brackets and separators included."""
        return sum(len(s) for s in self.answer_segments) + int(self.prompt_slots.shape[0])

    def prompts(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(n, P)`` prompt token ids for ``(n, L)`` inputs, built by indexing (no tokenizer)."""
        ids = self.prompt_template.to(inputs.device).expand(inputs.shape[0], -1).clone()
        ids[:, self.prompt_slots.to(inputs.device)] = self.states.to(inputs.device)[inputs]
        return ids


def format_ids(
    tokenizer: PreTrainedTokenizerBase, fmt: TextFormat, num_states: int, dim: int
) -> FormatIds | None:
    """The format's token ids if the tokenizer writes every symbol as one token and tokenizes
    prompts and answers exactly as the template says; ``None`` otherwise (decode freely)."""
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
    fids = FormatIds(
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
        want = fids.prompts(torch.tensor([x]))[0].tolist()
        it = iter(x)
        want += [vocab[t] if t is not None else int(fids.states[next(it)]) for t in template]
        got = tokenizer(fmt.prompt(x) + fmt.answer(x))["input_ids"]
        if list(got) != want:
            return None
    return fids


# ------------------------------------------------------------------- engines of the KV walk
class _Engine(Protocol):
    """An incremental forward: prefill distinct prompts, give each row its prompt's cache, then
    feed a few tokens per row at a time."""

    def prefill(self, ids: torch.Tensor, keep: int, total: int) -> torch.Tensor:
        """Logits ``(U, keep, V)`` of the last ``keep`` positions of ``ids`` (U, P); room for
        ``total`` positions per row."""
        ...

    def expand(self, index: torch.Tensor) -> bool:
        """Row ``r`` continues prompt ``index[r]``; False if this engine cannot share a prefill."""
        ...

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, t, V)`` after feeding ``ids`` (n, t) at the next positions."""
        ...


class _StaticCacheEngine:
    """Any causal LM: ``model(...)`` with a preallocated transformers ``StaticCache``."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.cache: StaticCache | None = None
        self.pos = 0

    def prefill(self, ids: torch.Tensor, keep: int, total: int) -> torch.Tensor:
        self.cache = StaticCache(config=self.model.config, max_cache_len=total)
        out = self.model(
            input_ids=ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=keep,
            cache_position=torch.arange(ids.shape[1], device=ids.device),
        )
        self.pos = ids.shape[1]
        return out.logits

    def expand(self, index: torch.Tensor) -> bool:
        layers = getattr(self.cache, "layers", None)
        if not layers or not all(
            isinstance(getattr(la, "keys", None), torch.Tensor)
            and isinstance(getattr(la, "values", None), torch.Tensor)
            for la in layers
        ):
            return False  # this transformers' cache layers keep no plain tensors
        for layer in layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            layer.batch_size = int(index.shape[0])
        return True

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            cache=self.cache,
            use_cache=True,
            cache_position=torch.arange(self.pos, self.pos + ids.shape[1], device=ids.device),
        )
        self.pos += ids.shape[1]
        return out.logits


class _NeoXEngine:
    """GPT-NeoX's forward written out in torch ops over preallocated key/value buffers.

    The same operations in the same order as transformers' GPT-NeoX (layer norms, fused QKV,
    partial rotary, SDPA, parallel or sequential residual), without its per-call cache objects,
    mask construction and cache copies. Only for configs it knows (:meth:`supports`).
    """

    def __init__(self, model: Any) -> None:  # a GPTNeoXForCausalLM (torch modules type as Any)
        core, cfg = model.gpt_neox, model.config
        self.model = model
        self.heads: int = cfg.num_attention_heads
        self.head_size: int = cfg.hidden_size // self.heads
        attn = core.layers[0].attention
        self.rotary: int = int(attn.rotary_ndims)
        self.scaling: float = float(attn.scaling)
        self.parallel = bool(cfg.use_parallel_residual)
        self.act: Any = core.layers[0].mlp.act
        self.rope: Any = core.rotary_emb
        self.dtype: torch.dtype = core.embed_in.weight.dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.pos = self.total = 0
        self.cos = self.sin = torch.empty(0)
        # After a shared expand: each row's (block, slot), the prompts' keys and values per block
        self.blocks: tuple[torch.Tensor, torch.Tensor] | None = None
        self.block_size = self.prefix_len = 0
        self.prefix_keys: list[torch.Tensor] = []
        self.prefix_values: list[torch.Tensor] = []

    @staticmethod
    def supports(model: Any) -> bool:
        if not isinstance(model, GPTNeoXForCausalLM):
            return False
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or {}
        return (
            rope.get("rope_type", "default") == "default"
            and getattr(model.gpt_neox.rotary_emb, "attention_scaling", 1.0) == 1.0
            and cfg.hidden_size % cfg.num_attention_heads == 0
        )

    def _positions(self, total: int, like: torch.Tensor) -> None:
        # transformers' rotary table, computed once for every position of the walk
        pos = torch.arange(total, device=like.device)[None]
        cos, sin = self.rope(like, position_ids=pos)
        self.cos, self.sin = cos[0], sin[0]  # (total, rotary)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        r = self.rotary
        x_rot, x_pass = x[..., :r], x[..., r:]
        half = r // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        return torch.cat([(x_rot * cos) + (rotated * sin), x_pass], dim=-1)

    def _forward(
        self, ids: torch.Tensor, keep: int, store: bool, mask: torch.Tensor | None
    ) -> torch.Tensor:
        n, t = ids.shape
        core: Any = self.model.gpt_neox
        pos = self.pos
        x = F.embedding(ids, core.embed_in.weight)
        cos, sin = self.cos[pos : pos + t], self.sin[pos : pos + t]
        for i, layer in enumerate(core.layers):
            attn = layer.attention
            ln1 = layer.input_layernorm
            h = F.layer_norm(x, ln1.normalized_shape, ln1.weight, ln1.bias, ln1.eps)
            qkv = F.linear(h, attn.query_key_value.weight, attn.query_key_value.bias)
            qkv = qkv.view(n, t, self.heads, 3 * self.head_size).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            if store:  # prefill: these are the prompts' keys and values
                self.keys.append(k)
                self.values.append(v)
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
            elif self.blocks is not None:
                g = pos - self.prefix_len
                self.keys[i][:, :, g : g + t] = k
                self.values[i][:, :, g : g + t] = v
                a = self._attend_blocked(q, i, g + t, mask)
            else:
                self.keys[i][:, :, pos : pos + t] = k
                self.values[i][:, :, pos : pos + t] = v
                a = self._attend(q, i, pos + t, mask)
            a = F.linear(a.transpose(1, 2).reshape(n, t, -1), attn.dense.weight, attn.dense.bias)
            ln2 = layer.post_attention_layernorm
            mlp = layer.mlp
            if self.parallel:
                h2 = F.layer_norm(x, ln2.normalized_shape, ln2.weight, ln2.bias, ln2.eps)
                m = F.linear(h2, mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias)
                m = F.linear(self.act(m), mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias)
                x = m + a + x
            else:
                a = a + x
                h2 = F.layer_norm(a, ln2.normalized_shape, ln2.weight, ln2.bias, ln2.eps)
                m = F.linear(h2, mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias)
                x = F.linear(self.act(m), mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias) + a
        fl = core.final_layer_norm
        x = F.layer_norm(x[:, -keep:], fl.normalized_shape, fl.weight, fl.bias, fl.eps)
        self.pos = pos + t
        return F.linear(x, self.model.get_output_embeddings().weight)

    def _attend(
        self, q: torch.Tensor, layer: int, upto: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        # Batched matmuls over (row, head): for a few new queries against a long cache they beat
        # SDPA's CPU kernels (measured 4.1 ms against 6.5 ms at 256 rows, 2 queries, 100 keys).
        n, h, t, d = q.shape
        keys = self.keys[layer].view(n * h, self.total, d)[:, :upto]
        values = self.values[layer].view(n * h, self.total, d)[:, :upto]
        q = q.reshape(n * h, t, d)
        if mask is None:
            scores = torch.bmm(q, keys.transpose(1, 2)) * self.scaling
        else:
            scores = torch.baddbmm(
                mask.expand(n * h, -1, -1), q, keys.transpose(1, 2), alpha=self.scaling
            )
        return torch.bmm(torch.softmax(scores, dim=-1), values).view(n, h, t, d)

    def _attend_blocked(
        self, q: torch.Tensor, layer: int, upto: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        # Keys and values of a shared prompt are read once per block of rows that continue it
        # (the prompt is most of the context: 68 of the json walk's 68-132 positions), and only
        # the generated part once per row. One softmax over both parts: the same attention.
        assert self.blocks is not None
        block, slot = self.blocks
        n, h, t, d = q.shape
        nb, size, p = self.prefix_keys[layer].shape[0], self.block_size, self.prefix_len

        def to_blocks(x: torch.Tensor) -> torch.Tensor:  # (n, h, t, c) -> (nb * h, size * t, c)
            out = x.new_zeros(nb, size, h, t, x.shape[-1])
            out[block, slot] = x
            return out.permute(0, 2, 1, 3, 4).reshape(nb * h, size * t, x.shape[-1])

        def to_rows(x: torch.Tensor) -> torch.Tensor:  # (nb * h, size * t, c) -> (n, h, t, c)
            x = x.view(nb, h, size, t, x.shape[-1]).permute(0, 2, 1, 3, 4)
            return x[block, slot]

        prefix_k = self.prefix_keys[layer].view(nb * h, p, d)
        prefix_v = self.prefix_values[layer].view(nb * h, p, d)
        gen_k = self.keys[layer].view(n * h, -1, d)[:, :upto]
        gen_v = self.values[layer].view(n * h, -1, d)[:, :upto]
        scores_p = to_rows(torch.bmm(to_blocks(q), prefix_k.transpose(1, 2)))
        scores_g = torch.bmm(q.reshape(n * h, t, d), gen_k.transpose(1, 2)).view(n, h, t, upto)
        if mask is not None:
            scores_g = scores_g * self.scaling + mask[:, p:]
        else:
            scores_g = scores_g * self.scaling
        probs = torch.softmax(torch.cat([scores_p * self.scaling, scores_g], dim=-1), dim=-1)
        out_p = to_rows(torch.bmm(to_blocks(probs[..., :p].contiguous()), prefix_v))
        out_g = torch.bmm(probs[..., p:].reshape(n * h, t, upto), gen_v).view(n, h, t, d)
        return out_p + out_g

    def prefill(self, ids: torch.Tensor, keep: int, total: int) -> torch.Tensor:
        self.keys, self.values, self.pos, self.total = [], [], 0, total
        self.blocks = None
        self._positions(total, self.model.gpt_neox.embed_in.weight)
        return self._forward(ids, keep, store=True, mask=None)

    def expand(self, index: torch.Tensor) -> bool:
        n, p = int(index.shape[0]), self.pos
        counts = torch.bincount(index)
        # Rows are grouped by prompt into blocks of the most common group size (per row): the
        # samples of one trajectory, typically; larger groups take several blocks.
        size = int(torch.mode(counts[index]).values)
        per_group = (counts + size - 1) // size
        if n < MIN_ROWS_PER_BLOCK * int(per_group.sum()):
            # Little sharing: every row gets its own copy of its prompt's keys and values.
            for store in (self.keys, self.values):
                for i, prefix in enumerate(store):
                    buf = prefix.new_empty(n, self.heads, self.total, self.head_size)
                    buf[:, :, :p] = prefix.index_select(0, index)
                    store[i] = buf
            return True
        order = torch.sort(index, stable=True).indices
        first_row = torch.cumsum(counts, 0) - counts  # of each group, in sorted order
        rank = torch.empty_like(index)
        rank[order] = torch.arange(n, device=index.device) - first_row[index[order]]
        first_block = torch.cumsum(per_group, 0) - per_group
        self.blocks = (first_block[index] + rank // size, rank % size)
        self.block_size, self.prefix_len = size, p
        block_prompt = torch.repeat_interleave(torch.arange(counts.shape[0]), per_group)
        self.prefix_keys = [k.index_select(0, block_prompt) for k in self.keys]
        self.prefix_values = [v.index_select(0, block_prompt) for v in self.values]
        for store in (self.keys, self.values):
            for i, prefix in enumerate(store):
                store[i] = prefix.new_empty(n, self.heads, self.total - p, self.head_size)
        return True

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        mask = None
        if t > 1:  # new token j sees the cache and new tokens up to itself
            cols = torch.arange(self.pos + t, device=ids.device)
            seen = cols[None, :] <= (self.pos + torch.arange(t, device=ids.device))[:, None]
            mask = torch.zeros(seen.shape, dtype=self.dtype, device=ids.device)
            mask = mask.masked_fill(~seen, float("-inf"))
        return self._forward(ids, t, store=False, mask=mask)


def _engine(model: PreTrainedModel) -> _Engine:
    return _NeoXEngine(model) if _NeoXEngine.supports(model) else _StaticCacheEngine(model)


def _prefill_shared(
    eng: _Engine,
    feed_of: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    keep: int,
    room: int,
) -> tuple[torch.Tensor, int]:
    """Logits ``(n, keep, V)`` after each row's prompt ``feed_of(inputs)``, with ``room`` more
    positions per row, and the number of prompts prefilled. Rows often share a prompt (the
    samples of one trajectory; every run at step 1): each distinct one is prefilled once and its
    keys and values given to its rows, unless the engine cannot share them."""
    uniq, inverse = torch.unique(inputs, dim=0, return_inverse=True)
    feed = feed_of(uniq)
    logits = eng.prefill(feed, keep, feed.shape[1] + room)
    if eng.expand(inverse):
        return logits[inverse], uniq.shape[0]
    feed = feed_of(inputs)
    return eng.prefill(feed, keep, feed.shape[1] + room), uniq.shape[0] + inputs.shape[0]


def _gumbel(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Standard Gumbel noise: ``argmax(logits / T + noise)`` samples ``softmax(logits / T)``."""
    noise = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(noise.clamp_min(torch.finfo(noise.dtype).tiny)))


def _parse_answers(
    texts: list[str], fmt: TextFormat, num_states: int, dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Decoded answers parsed: ``(n, L)`` outputs (zeros where not valid), valid flags and the
    parse failures counted by reason."""
    outputs = torch.zeros(len(texts), dim, dtype=torch.long)
    valid = torch.zeros(len(texts), dtype=torch.bool)
    failures: dict[str, int] = {}
    for r, text in enumerate(texts):
        try:
            outputs[r] = torch.tensor(fmt.parse(text, num_states, dim))
            valid[r] = True
        except ParseError as e:
            failures[e.reason] = failures.get(e.reason, 0) + 1
    return outputs.to(device), valid.to(device), failures


def in_precision(model: PreTrainedModel, precision: Precision) -> PreTrainedModel:
    """``model`` if it already has ``precision``, else a copy in it, in eval mode: the caller's
    model (the one trained next round) keeps its own."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    if next(model.parameters()).dtype == DTYPES[precision]:
        return model
    return cast(Any, copy.deepcopy(model)).to(DTYPES[precision]).eval()


# ------------------------------------------------------------------------ constrained decoding
@torch.inference_mode()
def decode_constrained(
    model: PreTrainedModel,
    fids: FormatIds,
    inputs: torch.Tensor,
    temps: torch.Tensor,
    noise_gen: torch.Generator,
    engine: Literal["auto", "static-cache"] = "auto",
    cost: DecodeCost | None = None,
) -> Decoded:
    """One chunk: every row an answer of exactly L in-alphabet states (see the module docstring).

    ``engine``: ``auto`` takes the pure-torch GPT-NeoX forward where it applies, ``static-cache``
    always ``model(...)`` (the reference the fast one is tested against). ``cost`` accumulates
    the work done.
    """
    device = inputs.device
    n, dim = inputs.shape
    state_ids = fids.states.to(device)
    greedy = temps <= 0
    scale = torch.where(greedy, torch.ones_like(temps), temps).float()[:, None, None]
    segs = fids.answer_segments
    num_tokens = fids.answer_length

    def logp_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # (n, m, V) logits, (n, m) targets -> (n,) summed temperature-scaled log-probabilities
        lp = torch.log_softmax(logits.float() / scale, dim=-1)
        return lp.gather(-1, targets[..., None]).squeeze(-1).double().sum(-1)

    lits = [torch.tensor(seg, device=device, dtype=torch.long).expand(n, -1) for seg in segs]
    eng = _engine(model) if engine == "auto" else _StaticCacheEngine(model)
    keep = lits[0].shape[1] + 1

    def feed_of(prompts: torch.Tensor) -> torch.Tensor:
        return torch.cat([fids.prompts(prompts), lits[0][: prompts.shape[0]]], dim=1)

    started, cpu_started = time.perf_counter(), time.process_time()
    logits, prefilled = _prefill_shared(eng, feed_of, inputs, keep, num_tokens)
    prompt_len = fids.prompt_template.shape[0] + lits[0].shape[1]
    walk_started, walk_cpu_started = time.perf_counter(), time.process_time()
    ll = (
        logp_of(logits[:, :-1], lits[0])
        if lits[0].shape[1]
        else torch.zeros(n, dtype=torch.float64, device=device)
    )
    chosen = torch.empty(n, dim, dtype=torch.long, device=device)
    # All Gumbel noise of the chunk in one draw: one call instead of one per state slot.
    gumbel = _gumbel((dim, n, state_ids.shape[0]), noise_gen, device)
    inv_scale = 1.0 / scale[:, 0]
    for i in range(dim):
        state_logits = logits[:, -1].float()[:, state_ids]  # (n, v)
        pick = torch.where(
            greedy, state_logits.argmax(-1), (state_logits * inv_scale + gumbel[i]).argmax(-1)
        )
        chosen[:, i] = pick
        token = state_ids[pick]
        ll += logp_of(logits[:, -1:], token[:, None])
        after = lits[i + 1]
        # The final literal (']') need not be fed: only its probability is wanted.
        step_in = torch.cat([token[:, None], after[:, :-1] if i == dim - 1 else after], dim=1)
        logits = eng.step(step_in)
        if after.shape[1]:
            ll += logp_of(logits[:, : after.shape[1]], after)
    if cost is not None:
        cfg = model.config
        cost.rows += n
        cost.prefill_tokens += prefilled * prompt_len
        cost.prefill_flops += prefilled * forward_flops(cfg, prompt_len, 0, keep)
        cost.prefill_seconds += walk_started - started
        cost.prefill_cpu_seconds += walk_cpu_started - cpu_started
        cost.decode_tokens += n * (num_tokens - lits[0].shape[1] - 1)
        pos = prompt_len
        for i in range(dim):
            t = 1 + len(segs[i + 1]) - (1 if i == dim - 1 else 0)
            cost.decode_flops += n * forward_flops(cfg, t, pos, t)
            pos += t
        cost.decode_seconds += time.perf_counter() - walk_started
        cost.decode_cpu_seconds += time.process_time() - walk_cpu_started
    return Decoded(
        outputs=chosen,
        log_likelihood=ll / num_tokens,
        valid=torch.ones(n, dtype=torch.bool, device=device),
        failures={},
    )


# ------------------------------------------------------------------------------ free decoding
class _StopAtClose(StoppingCriteria):
    """Stops each row once it has produced a token containing ``]``."""

    def __init__(self, close_mask: torch.Tensor) -> None:
        self.close_mask = close_mask

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return self.close_mask[input_ids[:, -1]]  # type: ignore[return-value]


def _close_mask(
    tokenizer: PreTrainedTokenizerBase, size: int, device: torch.device
) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    for tok, i in tokenizer.get_vocab().items():
        if i < size and CLOSE in tokenizer.convert_tokens_to_string([tok]):
            mask[i] = True
    return mask.to(device)


@torch.inference_mode()
def decode_free(
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
    dim = inputs.shape[1]
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
        out = cast(Any, model).generate(  # transformers types generate loosely
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
    texts = tokenizer.batch_decode(new.cpu(), skip_special_tokens=True)
    outputs, valid, failures = _parse_answers(texts, fmt, num_states, dim, device)
    return Decoded(outputs, ll, valid, failures)


@torch.inference_mode()
def decode_free_walk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: TextFormat,
    fids: FormatIds,
    inputs: torch.Tensor,
    temps: torch.Tensor,
    noise_gen: torch.Generator,
    *,
    num_states: int,
    max_new_tokens: int,
    stop_mask: torch.Tensor,
) -> Decoded:
    """Free decoding on the KV walk's engine, for our tokenizer: what :func:`decode_free` does
    with ``model.generate`` (sample each token from the full vocabulary at the row's
    temperature, stop a row at its first ``]`` or end of text, parse, count failures by reason),
    with the walk's shared prefill and per-row temperatures (Gumbel-max, as the constrained
    walk). Greedy rows take the argmax, as ``generate`` does. ``stop_mask``: the token ids that
    end a row (:func:`_stop_mask`)."""
    device = inputs.device
    n, dim = inputs.shape
    greedy = temps <= 0
    scale = torch.where(greedy, torch.ones_like(temps), temps).float()[:, None]
    eng = _engine(model)
    logits, _ = _prefill_shared(eng, fids.prompts, inputs, 1, max_new_tokens)
    tokens = torch.zeros(n, max_new_tokens, dtype=torch.long, device=device)
    cut = torch.full((n,), max_new_tokens, dtype=torch.long, device=device)
    ll = torch.zeros(n, dtype=torch.float64, device=device)
    running = torch.ones(n, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        scaled = logits[:, -1].float() / scale
        gumbel = _gumbel(tuple(scaled.shape), noise_gen, device)
        pick = torch.where(greedy, scaled.argmax(-1), (scaled + gumbel).argmax(-1))
        lp = torch.log_softmax(scaled, -1).gather(-1, pick[:, None]).squeeze(-1).double()
        ll += torch.where(running, lp, torch.zeros_like(lp))
        tokens[:, step] = pick
        stopped = running & stop_mask[pick]
        cut[stopped] = step + 1
        running &= ~stopped
        if not running.any() or step == max_new_tokens - 1:
            break
        logits = eng.step(pick[:, None])
    texts = tokenizer.batch_decode(
        [row[:c] for row, c in zip(tokens.cpu().tolist(), cut.tolist())], skip_special_tokens=True
    )
    outputs, valid, failures = _parse_answers(texts, fmt, num_states, dim, device)
    return Decoded(outputs, ll / cut.clamp_min(1), valid, failures)


def _stop_mask(model: PreTrainedModel, close_mask: torch.Tensor) -> torch.Tensor:
    """The tokens that end a free answer: those containing ``]`` and the end of text (where
    ``generate`` stops a row too)."""
    eos = model.generation_config.eos_token_id
    ids = [i for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
    mask = close_mask.clone()
    mask[[i for i in ids if i < mask.shape[0]]] = True
    return mask


# ------------------------------------------------------------------------------------ decoder
class Decoder:
    """Decodes chunks of rows, constrained or free (see the module docstring), from one seed.

    ``decoding="constrained"`` falls back to free decoding for a tokenizer that cannot be
    constrained (see :attr:`constrained`); ``strict=True`` makes that an error instead.
    """

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
        decoding: Decoding = "constrained",
        precision: Precision = "fp32",
        strict: bool = False,
    ) -> None:
        if decoding not in ("constrained", "free"):
            raise ValueError(f"decoding must be 'constrained' or 'free', got {decoding!r}")
        model = in_precision(model, precision)
        self.model: Any = model
        self.tokenizer, self.fmt = tokenizer, fmt
        self.num_states, self.dim, self.seed = num_states, dim, seed
        self.device = next(model.parameters()).device
        ours = format_ids(tokenizer, fmt, num_states, dim)
        self.fids = ours if decoding == "constrained" else None
        # Free decoding with our tokenizer samples on the walk's engine; any other uses generate.
        self.free_ids = ours if decoding == "free" else None
        if strict and decoding == "constrained" and ours is None:
            raise ValueError(
                "constrained decoding needs one token per state, bracket, separator, <inc> and "
                "newline (our word-level tokenizer); this tokenizer does not write the format so"
            )
        # With our tokenizer a well-formed answer has a known length; anything longer cannot parse.
        self.max_new_tokens = (
            max_new_tokens
            if ours is None
            else min(max_new_tokens, ours.answer_length + FREE_SLACK_TOKENS)
        )
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(seed)
        self.cost = DecodeCost()  # of the constrained walk
        self.close_mask = (
            None
            if self.fids is not None
            else _close_mask(tokenizer, model.get_output_embeddings().weight.shape[0], self.device)
        )
        self.stop_mask = _stop_mask(model, self.close_mask) if self.close_mask is not None else None

    @property
    def constrained(self) -> bool:
        return self.fids is not None

    def __call__(self, inputs: torch.Tensor, temps: torch.Tensor, *names: object) -> Decoded:
        """Decode one chunk; ``names`` name the ``generate`` path's random stream (the walks draw
        their noise sequentially from one device generator)."""
        if self.fids is not None:
            return decode_constrained(
                self.model, self.fids, inputs, temps, self.noise_gen, cost=self.cost
            )
        assert self.close_mask is not None and self.stop_mask is not None
        if self.free_ids is not None:
            return decode_free_walk(
                self.model,
                self.tokenizer,
                self.fmt,
                self.free_ids,
                inputs,
                temps,
                self.noise_gen,
                num_states=self.num_states,
                max_new_tokens=self.max_new_tokens,
                stop_mask=self.stop_mask,
            )
        n, dim = inputs.shape
        outputs = torch.zeros(n, dim, dtype=torch.long, device=self.device)
        ll = torch.zeros(n, dtype=torch.float64, device=self.device)
        valid = torch.zeros(n, dtype=torch.bool, device=self.device)
        failures: dict[str, int] = {}
        for t in torch.unique(temps).tolist():  # generate takes one temperature per call
            idx = (temps == t).nonzero().reshape(-1)
            d = decode_free(
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


def draw_seed(generator: torch.Generator) -> int:
    """One 62-bit seed from the caller's generator (all of a decoder's randomness)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


class eval_mode:
    """Evaluation mode for the duration, the caller's mode restored after (dropout off)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


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
    decoding: Decoding = "constrained",
    precision: Precision = "fp32",
    strict: bool = False,
) -> Decoded:
    """One answer per row of ``inputs`` (n, L) at per-row ``temperatures`` (0 = greedy).

    ``decoding``, ``precision`` and ``strict``: as in :class:`Decoder`.
    """
    inputs = torch.as_tensor(inputs, dtype=torch.long)
    n, dim = inputs.shape
    dec = Decoder(
        model,
        tokenizer,
        fmt,
        num_states=num_states,
        dim=dim,
        seed=draw_seed(generator),
        max_new_tokens=max_new_tokens,
        decoding=decoding,
        precision=precision,
        strict=strict,
    )
    temps = torch.as_tensor(temperatures, dtype=torch.float32).expand(n).to(dec.device)
    inputs = inputs.to(dec.device)
    with eval_mode(model):
        parts = [
            dec(inputs[i : i + batch_size], temps[i : i + batch_size], i)
            for i in range(0, n, max(1, batch_size))
        ]
    return Decoded.concat(parts)
