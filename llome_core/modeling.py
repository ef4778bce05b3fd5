"""Model and tokenizer factory (``shared/spec/algorithm.md`` §3.8): a tiny GPT-NeoX with a
word-level tokenizer built locally, any local Hugging Face causal-LM directory, and atomic
checkpoints.

Nothing here touches a model hub: every load is ``local_files_only``.

Our tokenizer has one token per state integer ``0..v-1``, per bracket, comma, ``<inc>`` and
newline, plus ``<eos>`` (also the pad token), ``<bos>`` and ``<unk>``. It adds no special tokens
when encoding (no BOS), so ``encode(prompt) + encode(answer) == encode(prompt + answer)``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from llome_core.config import ModelConfig
from llome_core.text import CLOSE, NEWLINE, OPEN, PROMPT_TAG, SEP

EOS, BOS, UNK = "<eos>", "<bos>", "<unk>"
FORMAT_TOKENS: tuple[str, ...] = (PROMPT_TAG, OPEN, CLOSE, SEP, NEWLINE)
# Enough for prompt + answer of the json format at L = 128 (2 * (2L + 2) + EOS = 517 tokens).
MAX_POSITIONS = 1024


class ModelLoadError(ValueError):
    """A model directory that is missing or is not a loadable causal LM; the message says why."""


def build_tokenizer(num_states: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the states ``0..num_states-1`` and the format tokens."""
    if num_states < 2:
        raise ValueError(f"num_states must be at least 2, got {num_states}")
    tokens = [EOS, BOS, UNK, *FORMAT_TOKENS] + [str(i) for i in range(num_states)]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Spaces and tabs only separate tokens; newline is a token (it ends the prompt). Every
    # integer, bracket, comma and <inc> is isolated, so "[3," is three tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
            pre_tokenizers.Split(
                Regex(r"<inc>|<eos>|<bos>|<unk>|\d+|\[|\]|,|\n"), behavior="isolated"
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
    )
    return fast


def is_own_tokenizer(tokenizer: PreTrainedTokenizerBase, num_states: int) -> bool:
    """Whether ``tokenizer`` is :func:`build_tokenizer`'s for ``num_states``: the mark of the tiny
    default model and of every checkpoint trained from it (a pretrained model brings its own)."""
    return bool(tokenizer.get_vocab() == build_tokenizer(num_states).get_vocab())


def build_model(
    config: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> GPTNeoXForCausalLM:
    """A randomly initialised tiny Pythia-architecture model; the same seed gives the same weights.

    The global torch RNG is forked, so building a model draws nothing from anyone else's stream.
    """
    if config.hidden_size % config.num_heads:
        raise ValueError(
            f"hidden_size {config.hidden_size} must be a multiple of num_heads {config.num_heads}"
        )
    cfg = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=4 * config.hidden_size,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={
            "partial_rotary_factor": 0.25,
            "rope_theta": 10000.0,
            "rope_type": "default",
        },
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def ensure_format_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Make a foreign tokenizer able to write the format: ``<inc>`` as one token and a pad token.

    Embeddings are resized when tokens were added. Our own tokenizer is left unchanged.
    """
    added = 0
    if PROMPT_TAG not in tokenizer.get_vocab():
        added += tokenizer.add_special_tokens({"additional_special_tokens": [PROMPT_TAG]})
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            added += tokenizer.add_special_tokens({"eos_token": EOS})
        tokenizer.pad_token = tokenizer.eos_token
    embeddings: Any = model.get_input_embeddings()
    if added or len(tokenizer) > embeddings.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_model_dir(path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a local Hugging Face directory (never from a hub).

    Raises :class:`ModelLoadError` if the directory is missing or holds no loadable model.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"model directory {str(p)!r} does not exist (expected a local folder)")
    if not (p / "config.json").is_file():
        raise ModelLoadError(
            f"{str(p)!r} has no config.json: expected a Hugging Face model directory "
            "(save_pretrained output with config.json, weights and tokenizer files)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except Exception as e:  # the library raises many kinds; say which file is at fault
        raise ModelLoadError(f"cannot load a tokenizer from {str(p)!r}: {e}") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"cannot load a causal language model from {str(p)!r}: {e}") from e
    return ensure_format_tokens(model, tokenizer)


def forward_flops(config: Any, new: int, past: int = 0, logits: int | None = None) -> int:
    """FLOPs (a multiply-add counts 2) of one row's forward over ``new`` tokens after ``past``
    cached ones, with the LM head on the last ``logits`` positions (default: all ``new``).

    Counted from the shapes of a decoder-only transformer (``hidden_size`` h, ``intermediate_size``
    I, ``num_hidden_layers``, ``vocab_size``): per layer and token, the QKV, output and MLP
    matmuls, 2 (4h² + 2hI); attention, 4h per key attended, a token at position p attending
    p + 1 keys (causal). Layer norms, softmax, rotary and sampling are not counted.
    """
    h, layers = int(config.hidden_size), int(config.num_hidden_layers)
    inner = int(getattr(config, "intermediate_size", None) or 4 * h)
    dense = new * layers * 2 * (4 * h * h + 2 * h * inner)
    keys = new * past + new * (new + 1) // 2
    head = (new if logits is None else logits) * 2 * h * int(config.vocab_size)
    return dense + layers * 4 * h * keys + head


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over the weight files of a saved model directory (lineage of a checkpoint)."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file())
    if not files:
        raise ModelLoadError(f"no weight files (*.safetensors, *.bin) in {str(p)!r}")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike
) -> str:
    """Save model and tokenizer to ``path`` atomically; returns the sha256 of the weights.

    Everything is written to a temporary directory beside ``path`` and renamed into place, so a
    reader (or a retried step) never sees half a checkpoint. An existing ``path`` is replaced.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        digest = weights_sha256(tmp)
        if dest.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rmdir(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A checkpoint from :func:`save_checkpoint` (or any local HF directory), on ``device``."""
    model, tokenizer = load_model_dir(path)
    return cast(Any, model).to(device), tokenizer  # transformers types .to() loosely


def create_or_load(
    config: ModelConfig, num_states: int, seed: int, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The starting model: ``config.path`` if set, else a fresh tiny model from ``seed``."""
    if config.path:
        model, tokenizer = load_model_dir(config.path)
    else:
        tokenizer = build_tokenizer(num_states)
        model = build_model(config, tokenizer, seed)
    return cast(Any, model).to(device), tokenizer
