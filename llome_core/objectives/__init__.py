"""Training objectives of our own on top of trl (MargE, REINFORCE); SFT and DPO use trl's trainers."""

from llome_core.objectives.base import (
    ExtraFieldsCollator,
    completion_logprobs,
    self_normalized_weights,
    sequence_logprobs,
    tokenize_pair,
)
from llome_core.objectives.marge import MargETrainer, marge_loss
from llome_core.objectives.reinforce import ReinforceTrainer, reinforce_loss

__all__ = [
    "ExtraFieldsCollator",
    "MargETrainer",
    "ReinforceTrainer",
    "completion_logprobs",
    "marge_loss",
    "reinforce_loss",
    "self_normalized_weights",
    "sequence_logprobs",
    "tokenize_pair",
]
