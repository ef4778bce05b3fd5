"""A checkpoint of the tiny model trains with the tiny model's defaults (a campaign continued from
another campaign's checkpoint), a pretrained model with the paper's."""

from __future__ import annotations

from dataclasses import replace

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from llome_core import modeling
from llome_core.config import GAConfig, GenerateConfig, LoopConfig, ModelConfig, TrainConfig
from llome_core.ehrlich import Ehrlich
from llome_core.ga import run_ga
from llome_core.loop import LlomeLoop
from llome_core.training import PRETRAINED_DEFAULTS, TINY_DEFAULTS

DIM, STATES = 6, 6
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)


def test_our_tokenizer_is_recognised_after_a_save_and_a_foreign_one_is_not(tmp_path) -> None:
    tokenizer = modeling.build_tokenizer(STATES)
    model = modeling.build_model(TINY, tokenizer, seed=0)
    modeling.save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    _, loaded = modeling.load_model_dir(tmp_path / "ckpt")
    assert modeling.is_own_tokenizer(loaded, STATES)
    assert not modeling.is_own_tokenizer(loaded, STATES + 1)
    vocab = {"<unk>": 0, "hello": 1, "world": 2}
    foreign = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), unk_token="<unk>"
    )
    assert not modeling.is_own_tokenizer(foreign, STATES)


def test_a_loop_started_from_a_tiny_checkpoint_trains_at_the_tiny_models_rate(tmp_path) -> None:
    f = Ehrlich(num_states=STATES, dim=DIM, num_motifs=1, motif_length=2, random_seed=1)
    seed_data = run_ga(f, GAConfig(num_particles=60, num_steps=2, seed=1)).dataset
    tokenizer = modeling.build_tokenizer(STATES)
    modeling.save_checkpoint(
        modeling.build_model(TINY, tokenizer, seed=0), tokenizer, tmp_path / "ckpt"
    )
    config = LoopConfig(
        objective="sft",
        rounds=1,
        batch_size=4,
        model=replace(TINY, path=str(tmp_path / "ckpt")),
        train=TrainConfig(first_round_epochs=1, batch_size=16),
        generate=GenerateConfig(num_seeds=2, num_steps=1, samples_per_step=1),
    )
    loop = LlomeLoop(config, num_states=STATES, dim=DIM, workdir=tmp_path / "w")
    loop.tell(seed_data)
    info = loop.train()
    assert TINY_DEFAULTS["sft"][1] != PRETRAINED_DEFAULTS["sft"][1]
    assert info["learning_rate"] == TINY_DEFAULTS["sft"][1]
