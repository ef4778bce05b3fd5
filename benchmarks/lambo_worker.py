"""LaMBO-2 as an ask/tell process: runs INSIDE the throwaway LaMBO venv (``scripts/lambo_venv.sh``).

It imports only what that venv holds (cortex, lightning, hydra, omegaconf, torch, numpy) and
nothing of llome. ``benchmarks/lambo.py`` starts it and talks JSON lines over stdin/stdout:

- ``{"op": "init", "settings": {...}, "alphabet": [...], "seed": S, "x": [[int]], "y": [f|null]}``
  trains the first model on the seed data (``null`` = infeasible) -> ``{"op": "ready"}``
- ``{"op": "ask"}`` -> ``{"op": "batch", "x": [[int]], "parents": [[int]]}``: one LaMBO-2
  round's proposals, each with the candidate point it was edited from
- ``{"op": "tell", "y": [f|null]}`` labels of the last batch, in order -> ``{"op": "ok"}``
- ``{"op": "close"}`` or end of input: exit.

The round is the authors' driver, poli-baselines ``LaMBO2`` (``solver.py`` at main, which
bbo-bench's ``benchmark_optimizer.py`` uses), rewritten here without poli: the same three tasks
and data (all sequences with their feasibility; feasible ones with their value; unique feasible
ones for the denoising LM), the same recency partition, retraining from the *first* checkpoint on
the whole history each round, the same candidate points (the best ``fft_expansion_factor x
num_samples`` of the history thinned by farthest-first traversal to ``num_samples``), then
``num_steps`` steps of cortex's ``LaMBO`` and its last ``num_samples`` solutions. The oracle is
never here: the parent evaluates every batch with llome's Ehrlich function.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<cls>", "<pad>", "<eos>", "<unk>", ".", "-", "<mask>"]  # bbo-bench's vocab tail


def build_config(settings: dict[str, Any], vocab_file: str, data_dir: str, seed: int) -> Any:
    """The bbo-bench ``optimizer: lambo2`` config tree with the sweep's values from ``settings``."""
    from omegaconf import OmegaConf

    s = settings
    tokenizer = {
        "_target_": "cortex.tokenization.ProteinSequenceTokenizerFast",
        "vocab_file": vocab_file,
    }

    def data_module(balance: list[str] | None, **extra: Any) -> dict[str, Any]:
        return {
            "_target_": "cortex.data.data_module.TaskDataModule",
            "_recursive_": False,
            "lengths": [1.0, 0.0],
            "balance_train_partition": balance,
            "batch_size": s["batch_size"],
            **extra,
            "dataset_config": {"_target_": "cortex.data.dataset.NumpyDataset", "train": "???"},
        }

    def branch(out_dim: int, blocks: int) -> dict[str, Any]:
        return {
            "_target_": "cortex.model.branch.Conv1dBranch",
            "out_dim": out_dim,
            "channel_dim": s["feature_dim"],
            "num_blocks": blocks,
            "kernel_size": s["kernel_size"],
        }

    optimizer = {
        "name": "LaMBO2",
        "data_dir": data_dir,
        "random_seed": seed,
        **{
            k: s[k]
            for k in (
                "feature_dim",
                "embed_dim",
                "kernel_size",
                "batch_size",
                "max_epochs",
                "num_steps",
                "num_mutations_per_step",
                "max_sequence_length",
                "num_samples",
                "allow_length_change",
                "fft_expansion_factor",
            )
        },
        "tree": {
            "_target_": "cortex.model.tree.SequenceModelTree",
            "_recursive_": False,
            "fit_cfg": {
                "reinitialize_roots": False,
                "linear_probing": False,
                "weight_averaging": None,
                "optimizer": {
                    "_target_": "torch.optim.Adam",
                    "lr": s["lr"],
                    "weight_decay": 0.0,
                    "betas": [0.9, 0.99],
                    "fused": False,
                },
                "lr_scheduler": {
                    "_target_": "transformers.get_cosine_schedule_with_warmup",
                    "num_warmup_steps": s["warmup_epochs"],
                    "num_training_steps": s["max_epochs"],
                },
            },
        },
        "roots": {
            "protein_seq": {
                "_target_": "cortex.model.root.Conv1dRoot",
                "corruption_process": {"_target_": "cortex.corruption.MaskCorruptionProcess"},
                "tokenizer_transform": {
                    "_target_": "cortex.transforms.HuggingFaceTokenizerTransform",
                    "tokenizer": tokenizer,
                },
                "max_len": s["max_sequence_length"],
                "embed_dim": s["embed_dim"],
                "channel_dim": s["feature_dim"],
                "out_dim": s["embed_dim"],
                "num_blocks": 2,
                "kernel_size": s["kernel_size"],
            }
        },
        "trunk": {"_target_": "cortex.model.trunk.SumTrunk"},
        "branches": {
            "protein_constraint": branch(8, 1),
            "protein_property": branch(8, 1),
            "protein_generation": branch(32, 0),
        },
        "tasks": {
            "protein_constraint": {
                "generic_constraint": {
                    "_target_": "cortex.task.ClassificationTask",
                    "input_map": {"protein_seq": ["tokenized_seq"]},
                    "class_col": "is_feasible",
                    "num_classes": 2,
                    "corrupt_train_inputs": True,
                    "root_key": "protein_seq",
                    "ensemble_size": s["ensemble_size"],
                    "data_module": data_module(["is_feasible", "recency"]),
                }
            },
            "protein_property": {
                "generic_task": {
                    "_target_": "cortex.task.RegressionTask",
                    "input_map": {"protein_seq": ["tokenized_seq"]},
                    "outcome_cols": ["generic_task"],
                    "corrupt_train_inputs": True,
                    "root_key": "protein_seq",
                    "nominal_label_var": s["nominal_label_var"],
                    "ensemble_size": s["ensemble_size"],
                    "data_module": data_module(["recency"]),
                }
            },
            "protein_generation": {
                "protein_seq": {
                    "_target_": "cortex.task.DenoisingLanguageModelTask",
                    "tokenizer": tokenizer,
                    "input_map": {"protein_seq": ["tokenized_seq"]},
                    "root_key": "protein_seq",
                    "ensemble_size": 1,
                    "data_module": data_module(
                        None,
                        drop_last=False,
                        train_on_everything=False,
                        num_workers=s["num_workers"],
                    ),
                }
            },
        },
        "guidance_objective": {
            "static_kwargs": {
                "_target_": "cortex.acquisition.GraphNEI",
                "objectives": ["generic_task"],
                "constraints": None,
                "scaling": None,
            },
            "runtime_kwargs": {
                "_target_": "cortex.acquisition.get_graph_nei_runtime_kwargs",
                "objectives": ["generic_task"],
                "constraints": None,
                "scaling": None,
            },
        },
        "optim": {
            "_target_": "cortex.optim.generative.LaMBO",
            "max_num_solutions": s["num_samples"],
            "num_mutations_per_step": s["num_mutations_per_step"],
            "max_guidance_updates": s["max_guidance_updates"],
            "guidance_step_size": s["guidance_step_size"],
            "guidance_layer": "trunk",
            "kl_weight": s["kl_weight"],
            "feature_attr_temp": 1.0,
            "domain_name": "protein_seq",
            "exclude_initial_solution": s["exclude_initial_solution"],
            "resample_edit_positions": True,
        },
    }
    cfg = OmegaConf.create({"optimizer": optimizer})
    OmegaConf.set_struct(cfg, False)
    return cfg.optimizer


def geometric_partitioning(t: Any) -> Any:
    """poli-baselines' recency partition: 0 for the newest round, then blocks of 2, 4, 8 ..."""
    import numpy as np

    n = int(np.max(t))
    result = np.zeros_like(t)
    index, current = 0, n
    while current >= 0:
        if index == 0:
            result[t == current] = index
            current -= 1
        else:
            size = 2**index
            start = min(current - size + 1, 0)  # as the authors wrote it (min, not max)
            result[(t >= start) & (t < current + 1)] = index
            current -= size
        index += 1
    return result


def farthest_first(states: Any, scores: Any, n: int) -> list[int]:
    """beignet's ``farthest_first_traversal`` (descending scores; ties: higher score, then index).

    The authors measure edit distance; on fixed-length sequences with length changes disabled we
    use the Hamming distance, vectorized (the traversal is otherwise the same greedy rule).
    """
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    if n >= len(order):
        return [int(i) for i in order]
    selected = [int(order[0])]
    min_dist = (states != states[selected[0]]).sum(axis=1).astype(np.int64)
    min_dist[selected[0]] = -1
    # rank of each index in the score order breaks ties exactly as the heap does
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    for _ in range(1, n):
        best = np.flatnonzero(min_dist == min_dist.max())
        pick = int(best[np.argmin(rank[best])])
        selected.append(pick)
        min_dist = np.minimum(min_dist, (states != states[pick]).sum(axis=1))
        min_dist[selected] = -1
    return selected


class LamboRunner:
    """The authors' LaMBO-2 driver, one round per :meth:`ask`."""

    def __init__(
        self,
        settings: dict[str, Any],
        alphabet: list[str],
        seed: int,
        x: list[list[int]],
        y: list[float | None],
    ) -> None:
        import lightning as L
        import numpy as np
        import torch

        self.settings = settings
        self.alphabet = list(alphabet)
        self.index = {a: i for i, a in enumerate(self.alphabet)}
        self.workdir = Path(tempfile.mkdtemp(prefix="lambo-"))
        vocab_file = self.workdir / "vocab.txt"
        vocab_file.write_text("".join(f"{t}\n" for t in self.alphabet + SPECIAL_TOKENS))
        self.cfg = build_config(settings, str(vocab_file), str(self.workdir), seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        L.seed_everything(seed=seed, workers=True)
        torch.set_float32_matmul_precision("medium")
        self.history_x: list[Any] = [self._to_text(x)]
        self.history_y: list[Any] = [self._to_values(y)]
        self.history_t: list[Any] = [np.zeros(len(x), dtype=np.int64)]
        self.pending: Any = None
        model = self._train(None, settings["max_epochs"])
        self.initial_state = copy.deepcopy(model.state_dict())

    # -- conversions: llome states <-> the space-separated letters cortex tokenizes
    def _to_text(self, x: list[list[int]]) -> Any:
        import numpy as np

        return np.array([" ".join(self.alphabet[s] for s in row) for row in x])

    @staticmethod
    def _to_values(y: list[float | None]) -> Any:
        import numpy as np

        return np.array([-np.inf if v is None else float(v) for v in y], dtype=np.float64)

    def _to_states(self, texts: Any) -> list[list[int]]:
        return [[self.index[tok] for tok in str(t).split()] for t in texts]

    # -- one training run: a fresh tree, optionally loaded from the first checkpoint
    def _train(self, state: dict[str, Any] | None, max_epochs: int) -> Any:
        import hydra
        import lightning as L
        import numpy as np

        model = hydra.utils.instantiate(self.cfg.tree)
        model.build_tree(self.cfg, skip_task_setup=True)
        if state is not None:
            model.load_state_dict(state)
        x = np.concatenate(self.history_x[::-1])
        y = np.concatenate(self.history_y[::-1])
        t = np.concatenate(self.history_t[::-1])
        recency = geometric_partitioning(t)
        feasible = y > -np.inf
        unique_x, first = np.unique(x[feasible], return_index=True)
        data = {
            "generic_constraint": {"tokenized_seq": x, "is_feasible": feasible, "recency": recency},
            "generic_task": {
                "tokenized_seq": x[feasible],
                "generic_task": y[feasible],
                "recency": recency[feasible],
            },
            "protein_seq": {"tokenized_seq": unique_x, "recency": t[feasible][first]},
        }
        for key, task in model.task_dict.items():
            task.data_module.setup(stage="test", dataset_kwargs={"data": data[key]})
            task.data_module.setup(stage="fit", dataset_kwargs={"data": data[key]})
        trainer = L.Trainer(
            max_epochs=max_epochs,
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
            precision=32,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
        )
        trainer.fit(model, train_dataloaders=model.get_dataloader(split="train"))
        return model

    def _candidate_points(self) -> Any:
        import numpy as np

        x = np.concatenate(self.history_x)
        y = np.concatenate(self.history_y)
        top = np.argsort(y)[::-1][
            : min(len(x), self.settings["fft_expansion_factor"] * self.settings["num_samples"])
        ]
        states = np.array(self._to_states(x[top]), dtype=np.int64)
        n = self.settings["num_samples"]
        picked = farthest_first(states, y[top], n)
        # poli-baselines pads a history shorter than num_samples with random mutants that the
        # oracle labels (calls outside the budget); we repeat the picked points instead, best
        # first, so every round proposes exactly num_samples sequences.
        picked = [picked[i % len(picked)] for i in range(n)]
        return x[top][picked]

    def ask(self) -> tuple[list[list[int]], list[list[int]]]:
        import hydra

        model = self._train(self.initial_state, self.settings["max_epochs"])
        candidates = self._candidate_points()
        runtime = hydra.utils.call(
            self.cfg.guidance_objective.runtime_kwargs, model=model, candidate_points=candidates
        )
        acquisition = hydra.utils.instantiate(self.cfg.guidance_objective.static_kwargs, **runtime)
        transform = model.root_nodes["protein_seq"].eval_transform
        tokenizer = transform[0].tokenizer
        if not self.cfg.allow_length_change:
            tokenizer.corruption_vocab_excluded.add("-")
            tokenizer.sampling_vocab_excluded.add("-")
        tok_idxs = transform(candidates)
        optimizer = hydra.utils.instantiate(
            self.cfg.optim,
            params=tok_idxs,
            is_mutable=tokenizer.get_corruptible_mask(tok_idxs),
            model=model,
            objective=acquisition,
            constraint_fn=None,
        )
        for _ in range(self.settings["num_steps"]):
            optimizer.step()
        designs = optimizer.get_best_solutions()["protein_seq"].values
        self.pending = designs
        # LaMBO keeps its solutions in the order of the points it started from
        return self._to_states(designs), self._to_states(candidates)

    def tell(self, y: list[float | None]) -> None:
        import numpy as np

        if self.pending is None or len(y) != len(self.pending):
            raise ValueError("tell needs one label per sequence of the last ask")
        self.history_x.append(np.asarray(self.pending))
        self.history_y.append(self._to_values(y))
        self.history_t.append(np.full(len(y), self.history_t[-1][-1] + 1, dtype=np.int64))
        self.pending = None


def main() -> int:
    # cortex and lightning print to stdout: keep the protocol on a private copy of it
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("WANDB_MODE", "disabled")
    threads = os.environ.get("LAMBO_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    def reply(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    runner: LamboRunner | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        op = message.get("op")
        started = time.perf_counter()
        try:
            if op == "init":
                runner = LamboRunner(
                    message["settings"],
                    message["alphabet"],
                    int(message["seed"]),
                    message["x"],
                    message["y"],
                )
                reply({"op": "ready", "seconds": time.perf_counter() - started})
            elif op == "ask" and runner is not None:
                x, parents = runner.ask()
                reply(
                    {
                        "op": "batch",
                        "x": x,
                        "parents": parents,
                        "seconds": time.perf_counter() - started,
                    }
                )
            elif op == "tell" and runner is not None:
                runner.tell(message["y"])
                reply({"op": "ok"})
            elif op == "close":
                break
            else:
                reply({"op": "error", "error": f"unexpected {op!r} (init comes first)"})
        except Exception as exc:  # noqa: BLE001  (a process boundary: the parent reports it)
            import traceback

            traceback.print_exc()
            reply({"op": "error", "error": f"{type(exc).__name__}: {exc}"})
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
