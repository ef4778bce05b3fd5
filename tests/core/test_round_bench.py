"""``llome bench round``'s decode breakdown: every profiled op lands in one group, and the
groups are named by ops this torch really calls (a renamed op would empty its group)."""

from __future__ import annotations

import torch

from benchmarks.round import decode_breakdown
from llome_core.config import ModelConfig
from llome_core.modeling import build_model, build_tokenizer
from llome_core.text import TextFormat


def test_the_decode_breakdown_splits_the_time_between_matmuls_attention_and_the_rest() -> None:
    tokenizer = build_tokenizer(8)
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2), tokenizer, seed=0)
    inputs = torch.randint(0, 8, (2, 8), generator=torch.Generator().manual_seed(0))
    out = decode_breakdown(
        model.eval(),
        tokenizer,
        TextFormat("json"),
        inputs.repeat_interleave(8, dim=0),
        batch_size=16,
        num_states=8,
    )
    groups = [out[g] for g in ("dense", "attention", "other")]
    assert abs(sum(g["share_of_time"] for g in groups) - 1) < 0.01
    assert all(g["share_of_time"] > 0 for g in groups)
    # The QKV, output, MLP and LM-head matmuls outweigh the attention's; the rest does none.
    assert out["dense"]["gflop"] > out["attention"]["gflop"] > 0
    assert out["other"]["gflop"] < 0.05 * out["dense"]["gflop"]
