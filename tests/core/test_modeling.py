"""Tokenizer and model factory, local loading, atomic checkpoints (spec §3.8)."""

from __future__ import annotations

import json

import pytest
import torch

from llome_core.config import ModelConfig
from llome_core.modeling import (
    ModelLoadError,
    build_model,
    build_tokenizer,
    create_or_load,
    load_checkpoint,
    load_model_dir,
    save_checkpoint,
)
from llome_core.text import TextFormat

V, L = 8, 8
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_tokenizer_round_trips_a_prompt_one_token_per_symbol(kind):
    tok = build_tokenizer(V)
    fmt = TextFormat(kind)
    x = [0, 7, 3, 3, 1, 2, 6, 5]
    text = fmt.prompt(x) + fmt.answer(x)
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert len(ids) == 2 + 2 * fmt.answer_length(L)  # <inc>, answer, newline, answer
    assert fmt.parse(tok.decode(ids).split("\n", 1)[1], V, L) == x
    # no BOS/EOS added: prompt and answer tokenize independently
    assert tok(fmt.prompt(x))["input_ids"] + tok(fmt.answer(x))["input_ids"] == ids


def test_tokenizer_maps_out_of_vocabulary_integers_to_unk():
    tok = build_tokenizer(V)
    assert tok("[3, 12]")["input_ids"][3] == tok.unk_token_id
    assert tok.pad_token_id == tok.eos_token_id


def test_same_seed_builds_the_same_model_and_leaves_global_rng_alone():
    tok = build_tokenizer(V)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(TINY, tok, seed=5)
    after = torch.rand(1)
    b = build_model(TINY, tok, seed=5)
    c = build_model(TINY, tok, seed=6)
    assert before == after
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.gpt_neox.embed_in.weight, c.gpt_neox.embed_in.weight)
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 2
    assert a.config.max_position_embeddings >= 2 * TextFormat("json").answer_length(128) + 3


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model, tok = create_or_load(TINY, V, seed=1)
    ids = torch.tensor([tok(TextFormat().prompt(list(range(L))))["input_ids"]])
    digest = save_checkpoint(model, tok, tmp_path / "ckpt")
    assert len(digest) == 64
    loaded, tok2 = load_checkpoint(tmp_path / "ckpt", "cpu")
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert tok2.get_vocab() == tok.get_vocab()
    assert (
        tok2(TextFormat().answer([1, 2]))["input_ids"]
        == tok(TextFormat().answer([1, 2]))["input_ids"]
    )
    # only the final directory is left beside it, no temporary ones
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_saving_over_a_checkpoint_replaces_it_and_the_digest_follows_the_weights(tmp_path):
    model, tok = create_or_load(TINY, V, seed=1)
    d1 = save_checkpoint(model, tok, tmp_path / "ckpt")
    assert save_checkpoint(model, tok, tmp_path / "ckpt") == d1
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[0, 0] += 1.0
    d2 = save_checkpoint(model, tok, tmp_path / "ckpt")
    assert d2 != d1
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(loaded.gpt_neox.embed_in.weight, model.gpt_neox.embed_in.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_loading_a_missing_or_invalid_directory_says_why(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model_dir(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model_dir(bad)


def test_a_foreign_tokenizer_gets_the_prompt_tag_and_a_pad_token(tmp_path):
    # A "foreign" model: a tokenizer without <inc> and without pad, saved as an HF directory.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        t: i for i, t in enumerate(["</s>", "<unk>", "[", "]", ",", "\n"] + list("0123456789"))
    }
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    model = build_model(TINY, foreign, seed=0)
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    model.save_pretrained(tmp_path / "foreign")
    foreign.save_pretrained(tmp_path / "foreign")

    loaded, tok = load_model_dir(tmp_path / "foreign")
    assert "<inc>" in tok.get_vocab()
    assert tok.pad_token_id == tok.eos_token_id
    assert loaded.get_input_embeddings().weight.shape[0] == len(tok) == len(vocab) + 1
    assert tok("<inc>")["input_ids"] == [tok.convert_tokens_to_ids("<inc>")]


def test_forward_flops_counts_matmuls_causal_attention_and_the_head():
    from types import SimpleNamespace

    from llome_core.modeling import forward_flops

    cfg = SimpleNamespace(hidden_size=4, num_hidden_layers=1, intermediate_size=16, vocab_size=10)
    # 2 new tokens after 3 cached: matmuls 2 * 2 * (4*16 + 2*4*16); at positions 3 and 4 they
    # attend 4 + 5 keys, 4h FLOPs each; the head 2h per vocabulary entry and logit
    assert forward_flops(cfg, 2, past=3) == 768 + 4 * 4 * 9 + 2 * 2 * 4 * 10
    assert forward_flops(cfg, 2, past=3, logits=1) == 768 + 4 * 4 * 9 + 2 * 4 * 10
