"""One outer round of LLOME (train, generate, filter), timed per phase against the machine's peak
and against the obvious peers, all measured in the same run.

    llome bench round [--preset NAME] [--budget N] [--objective OBJ] [--format json|compact]
                      [--threads T] [--precision fp32|bf16] [--json FILE]

Defaults: the paper's instance (``ehr_v-32_l-032_m-4_c-4_q-4``), N = 2000 oracle calls, ``sft``,
round 1 of the tiny default model from the GA seed data (10 steps x 1000 particles, seed 50494),
with the refinement budget :class:`llome_core.config.LoopConfig` resolves for N.

Per phase: wall and CPU seconds (``time.process_time``, all threads), tokens and achieved
GFLOP/s. FLOPs come from the model's shapes (:func:`llome_core.modeling.forward_flops`: the QKV,
output and MLP matmuls, causal attention at 4h per key, the LM head where logits are taken; a
multiply-add is 2 FLOPs; norms, softmax and sampling are free):

- ``train``: 3x the forward FLOPs of every training sequence per epoch (forward and backward),
  plus one forward of every held-out sequence per evaluation, over the phase's wall time (which
  includes building examples and the evaluations). DPO also counts its reference model's forward,
  MargE/REINFORCE their one reference scoring pass.
- ``prefill``: the forward over every distinct prompt (and the answer's opening bracket);
  ``decode``: the constrained walk's forwards (2 tokens per state in json, 1 in compact), both
  from :class:`llome_core.decoding.DecodeCost`. ``generate`` is the whole inner loop.
- ``filter``: the selection (no FLOPs).

Peak (``peak_gflops``): the best of timed fp32 ``torch.matmul`` calls at a large square size,
measured before and after the round, by wall clock and by process CPU time (times the threads;
on shared cores the wall clock undercounts it, ``peak_gflops_wall`` is the wall figure alone);
the same at the model's own matmul shapes for each phase is reported beside it
(``peak_at_shapes``, by CPU time), and the bf16 peak at the large square by CPU time
(``peak_gflops_bf16``): with ``--precision bf16`` (decoding with a bfloat16 copy of the model,
training fp32) ``decode_pct_of_bf16_peak_cpu`` holds the decode against it. ``pct_of_peak`` is a phase's wall-clock GFLOP/s over
``peak_gflops``; ``pct_of_peak_cpu`` its GFLOP per CPU-second times the threads over it, the
figure other processes on the same cores disturb least.

Peers on the same model and inputs, in the same run: ``model.generate`` (sampling at T = 1,
exactly the answer's number of new tokens, then parsed) against our decoder on the same rows
(``decode_vs_generate``: our rows/s over generate's; every one of ours must be valid), and a plain
trl ``SFTTrainer`` (library defaults but fp32 and no gradient checkpointing, which are emulated
and pointless on CPU) on the round's training records (``train_vs_sft``: our training tokens/s
over its).

Where decode's time goes (``decode_breakdown``): the peer rows decoded again under
``torch.profiler``, the ops' self time split between the dense matmuls, attention and the rest,
with the dense group's GFLOP/s against the peak of the decode's precision
(``dense_pct_of_peak``). Its times are wall times: run it on cores nothing else uses.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Self

import torch

PAPER_PRESET = "ehr_v-32_l-032_m-4_c-4_q-4"
PEER_ROWS = 1024  # rows decoded by both ours and generate for the ratio
PEER_STEPS = 20  # SFTTrainer steps timed after 3 of warm-up
SQUARE = 2048  # large square matmul for the peak


def machine() -> str:
    """The CPU's model name as lscpu says it (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(
    m: int,
    k: int,
    n: int,
    seconds: float = 0.25,
    repeats: int = 3,
    cpu: bool = False,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Best achieved GFLOP/s of an (m, k) @ (k, n) ``torch.matmul`` (fp32 unless ``dtype``) over
    ``repeats`` runs; ``cpu=True``: per second of this process's CPU time, times the threads (what
    the cores do while they run it, whatever else shares them)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        calls, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            torch.matmul(a, b)
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        spent = (time.process_time() - c0) / torch.get_num_threads() if cpu else dt
        best = max(best, 2 * m * k * n * calls / max(spent, 1e-9) / 1e9)
    return best


def shapes_gflops(rows: int, hidden: int, inner: int) -> float:
    """Peak at one layer's matmul shapes for ``rows`` token rows: FLOPs of QKV, output and the
    two MLP matmuls over the sum of their best times."""
    shapes = [(rows, hidden, 3 * hidden), (rows, hidden, hidden), (rows, hidden, inner)]
    shapes.append((rows, inner, hidden))
    flops = [2 * m * k * n for m, k, n in shapes]
    seconds = [f / (matmul_gflops(*s, 0.15, 3, True) * 1e9) for f, s in zip(flops, shapes)]
    return sum(flops) / sum(seconds) / 1e9


class _Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> Self:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def _phase(
    wall: float, cpu: float, tokens: float, flops: float, peak: float, threads: int
) -> dict[str, Any]:
    """A phase's figures; ``pct_of_peak_cpu`` compares FLOPs per CPU-second with the peak per
    thread, the figure other processes on the same cores disturb least."""
    gflops = flops / wall / 1e9 if wall > 0 else 0.0
    per_cpu = flops / cpu / 1e9 if cpu > 0 else 0.0
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "tokens": int(tokens),
        "gflop": round(flops / 1e9, 3),
        "gflops": round(gflops, 2),
        "pct_of_peak": round(100 * gflops / peak, 1) if peak > 0 else None,
        "gflops_per_cpu_s": round(per_cpu, 2),
        "pct_of_peak_cpu": round(100 * per_cpu * threads / peak, 1) if peak > 0 else None,
    }


def _sequence_tokens(tokenizer: Any, records: list[dict[str, Any]]) -> list[int]:
    """Tokens of every sequence a trainer forwards for these records (EOS included)."""
    out: list[int] = []
    for r in records:
        answers = [r["completion"]] if "completion" in r else [r["chosen"], r["rejected"]]
        for a in answers:
            out.append(len(tokenizer(r["prompt"] + a)["input_ids"]) + 1)
    return out


def _train_flops(config: Any, lengths: list[int], times: float) -> float:
    from llome_core.modeling import forward_flops

    return times * sum(forward_flops(config, t) for t in lengths)


def run_generate_peer(
    model: Any,
    tokenizer: Any,
    fmt: Any,
    inputs: torch.Tensor,
    *,
    batch_size: int,
    num_states: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """``model.generate`` sampling at T = 1 on ``inputs``, exactly an answer's tokens per row (on
    a bfloat16 copy of the model for ``precision="bf16"``, as ours decodes)."""
    from llome_core.decoding import in_precision

    model = in_precision(model, precision)  # type: ignore[arg-type]
    dim = inputs.shape[1]
    new_tokens = fmt.answer_length(dim)
    texts = [fmt.prompt(x) for x in inputs.tolist()]
    valid = 0
    with _Clock() as c, torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="left"
            )
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            valid += sum(isinstance(fmt.try_parse(t, num_states, dim), list) for t in decoded)
    n = len(texts)
    return {
        "rows": n,
        "seconds": round(c.wall, 3),
        "rows_per_s": n / c.wall,
        "valid_frac": valid / n,
    }


def run_decode_ours(
    model: Any,
    tokenizer: Any,
    fmt: Any,
    inputs: torch.Tensor,
    *,
    batch_size: int,
    num_states: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Our constrained decoder on the same rows at T = 1."""
    from llome_core.decoding import decode

    with _Clock() as c:
        d = decode(
            model,
            tokenizer,
            fmt,
            inputs,
            1.0,
            num_states=num_states,
            generator=torch.Generator().manual_seed(0),
            batch_size=batch_size,
            precision=precision,  # type: ignore[arg-type]
        )
    n = inputs.shape[0]
    return {
        "rows": n,
        "seconds": round(c.wall, 3),
        "rows_per_s": n / c.wall,
        "valid_frac": float(d.valid.float().mean()),
    }


# Where a decode's CPU time goes, by the ops the profiler names (self time, so nothing twice).
DENSE_OPS = {"aten::addmm", "aten::mm", "aten::matmul"}
ATTENTION_OPS = {
    "aten::bmm",
    "aten::baddbmm",
    "aten::_softmax",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
}


def decode_breakdown(
    model: Any,
    tokenizer: Any,
    fmt: Any,
    inputs: torch.Tensor,
    *,
    batch_size: int,
    num_states: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Our decoder on ``inputs`` under ``torch.profiler``: the share of the ops' self time that
    goes to the dense matmuls (QKV, output, MLP, LM head), to attention (its batched matmuls and
    softmax) and to everything else (norms, activations, rotary, cache writes, indexing,
    sampling), with each group's GFLOP (the profiler's count) over its time. It says how far
    decode can get by speeding up one group. The ops' times are wall times: measure on cores
    nothing else uses."""
    from torch.profiler import ProfilerActivity, profile

    def run(rows: torch.Tensor) -> None:
        run_decode_ours(
            model,
            tokenizer,
            fmt,
            rows,
            batch_size=batch_size,
            num_states=num_states,
            precision=precision,
        )

    def group_of(key: str) -> str:
        return "dense" if key in DENSE_OPS else "attention" if key in ATTENTION_OPS else "other"

    run(inputs[:batch_size])  # warm-up
    groups = {g: {"seconds": 0.0, "gflop": 0.0} for g in ("dense", "attention", "other")}
    # Counting FLOPs slows the profiled ops 2x (measured), so times come from a second run.
    for count_flops in (True, False):
        with profile(activities=[ProfilerActivity.CPU], with_flops=count_flops) as prof:
            run(inputs)
        for e in prof.key_averages():
            if count_flops:
                groups[group_of(e.key)]["gflop"] += (e.flops or 0) / 1e9
            else:
                groups[group_of(e.key)]["seconds"] += e.self_cpu_time_total / 1e6
    total = sum(v["seconds"] for v in groups.values())
    out: dict[str, Any] = {"rows": int(inputs.shape[0]), "profiled_s": round(total, 3)}
    for g, v in groups.items():
        out[g] = {
            "share_of_time": round(v["seconds"] / total, 3) if total > 0 else None,
            "gflop": round(v["gflop"], 3),
            "gflops": round(v["gflop"] / v["seconds"], 1) if v["seconds"] > 0 else 0.0,
        }
    return out


def run_sft_peer(
    model: Any, tokenizer: Any, records: list[dict[str, Any]], *, batch_size: int, lr: float
) -> dict[str, Any]:
    """A plain trl SFTTrainer on ``records``: seconds per step after warm-up, tokens per second."""
    import datasets
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    marks: dict[int, float] = {}

    class _Marks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks[state.global_step] = time.perf_counter()

    warm = 3
    steps = min(PEER_STEPS + warm, max(warm + 1, math.ceil(len(records) / batch_size)))
    # Completions only, as the round's SFT trains on them (the reward column is ours).
    datasets.disable_progress_bars()
    ds = Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = SFTConfig(
            output_dir=tmp,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            max_steps=steps,
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_pin_memory=False,
        )
        trainer = SFTTrainer(
            model=copy.deepcopy(model), args=args, train_dataset=ds, processing_class=tokenizer
        )
        trainer.add_callback(_Marks())
        trainer.train()
    timed = steps - warm
    seconds = (marks[steps] - marks[warm]) / timed
    per_step = sum(_sequence_tokens(tokenizer, records[:batch_size])) / min(
        batch_size, len(records)
    )
    tokens_per_s = per_step * batch_size / seconds
    return {
        "steps_timed": timed,
        "seconds_per_step": round(seconds, 4),
        "tokens_per_s": tokens_per_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llome bench round", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=PAPER_PRESET, help="Ehrlich preset name")
    p.add_argument("--budget", type=int, default=2000, help="N: oracle calls of the round")
    p.add_argument("--objective", default="sft", choices=["sft", "dpo", "marge", "reinforce"])
    p.add_argument("--format", choices=["json", "compact"], default="json")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="of the decoding (not training)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from llome_core import generation, modeling, selection, training
    from llome_core.config import GAConfig, GenerateConfig, LoopConfig, ModelConfig
    from llome_core.ehrlich import PAPER_SEED, Ehrlich, preset_config
    from llome_core.ga import run_ga
    from llome_core.optimizer import Labelled
    from llome_core.rng import generator
    from llome_core.text import TextFormat

    f = Ehrlich.from_config(preset_config(args.preset))
    v, dim = f.num_states, f.dim
    config = LoopConfig(
        objective=args.objective,
        rounds=1,
        batch_size=args.budget,
        model=ModelConfig(text_format=args.format),
        generate=GenerateConfig(precision=args.precision),
    )
    fmt = TextFormat(args.format)
    gen_cfg = config.generate
    print(
        f"llome bench round: {args.preset}, N = {args.budget}, {args.objective}, {args.format}, "
        f"{args.precision} decoding, {torch.get_num_threads()} threads on {machine()}; refinement {gen_cfg.num_seeds} seeds "
        f"x {gen_cfg.num_steps} steps x (1 + {len(gen_cfg.temperatures)} x "
        f"{gen_cfg.samples_per_step}), chunks of {gen_cfg.batch_size}",
        flush=True,
    )
    peak_before = matmul_gflops(SQUARE, SQUARE, SQUARE, repeats=8)
    peak_cpu_before = matmul_gflops(SQUARE, SQUARE, SQUARE, repeats=4, cpu=True)

    seed_data = run_ga(f, GAConfig(seed=PAPER_SEED)).dataset
    labelled = Labelled(seed_data.sequences, seed_data.values, seed_data.feasible)
    model, tokenizer = modeling.create_or_load(config.model, v, config.seed)
    start_model = copy.deepcopy(model)
    mcfg = model.config
    hidden, inner = int(mcfg.hidden_size), int(mcfg.intermediate_size)

    with tempfile.TemporaryDirectory() as tmp, _Clock() as train_clock:
        result = training.train_round(
            model,
            tokenizer,
            fmt,
            labelled,
            objective=args.objective,
            config=config.train,
            round_index=0,
            seed=config.seed,
            output_dir=Path(tmp),
            num_seeds=gen_cfg.num_seeds or 200,
            num_states=v,
            feasible=f.is_feasible,
        )
    tm = result.metrics
    train_records = result.examples.records(fmt, "train")
    heldout_records = result.examples.records(fmt, "heldout")
    train_lengths = _sequence_tokens(tokenizer, train_records)
    heldout_lengths = _sequence_tokens(tokenizer, heldout_records)
    evals = len(tm["eval_history"])
    passes = 3 * tm["epochs"] + (tm["epochs"] if args.objective == "dpo" else 0)
    if args.objective in ("marge", "reinforce"):
        passes += 1  # the reference scoring pass
    train_flops = _train_flops(mcfg, train_lengths, passes) + _train_flops(
        mcfg, heldout_lengths, evals
    )
    train_tokens = sum(train_lengths) * tm["epochs"] + sum(heldout_lengths) * evals

    temperatures = generation.temperatures_for(None)
    with _Clock() as gen_clock:
        refinement = generation.refine(
            result.model,
            tokenizer,
            fmt,
            result.seeds,
            num_states=v,
            dim=dim,
            config=gen_cfg,
            temperatures=temperatures,
            generator=generator(config.seed, "generate", 0),
        )
    known = {tuple(r) for r in labelled.sequences.tolist()}
    with _Clock() as filter_clock:
        chosen = selection.select(
            refinement.candidates,
            args.budget,
            exclude=known,
            quantile=gen_cfg.likelihood_quantile,
            generator=generator(config.seed, "filter", 0),
        )
    cost = refinement.cost

    # Peers on the same model and rows: the first rows refinement step 1 decodes.
    per_seed = 1 + len(temperatures) * int(gen_cfg.samples_per_step or 1)
    rows = result.seeds.repeat_interleave(per_seed, dim=0)[:PEER_ROWS]
    peer_args = {"batch_size": gen_cfg.batch_size, "num_states": v, "precision": args.precision}
    ours = run_decode_ours(result.model, tokenizer, fmt, rows, **peer_args)  # type: ignore[arg-type]
    plain = run_generate_peer(result.model, tokenizer, fmt, rows, **peer_args)  # type: ignore[arg-type]
    breakdown = decode_breakdown(result.model, tokenizer, fmt, rows, **peer_args)  # type: ignore[arg-type]
    sft_peer = None
    if "completion" in (train_records[0] if train_records else {}):
        sft_peer = run_sft_peer(
            start_model,
            tokenizer,
            train_records,
            batch_size=tm["batch_size"],
            lr=tm["learning_rate"],
        )

    peak_wall = max(peak_before, matmul_gflops(SQUARE, SQUARE, SQUARE, repeats=8))
    # On cores other work shares, wall-clock bursts undercount the peak; CPU time does not.
    peak = max(peak_wall, peak_cpu_before, matmul_gflops(SQUARE, SQUARE, SQUARE, 0.25, 4, True))
    peak_bf16 = matmul_gflops(SQUARE, SQUARE, SQUARE, 0.25, 4, True, torch.bfloat16)
    decode_rows = gen_cfg.batch_size * (2 if fmt.kind == "json" else 1)
    chunks = max(1, math.ceil(cost["rows"] / gen_cfg.batch_size))
    prefill_rows = round(cost["prefill_tokens"] / chunks)  # prompt tokens per chunk's prefill
    seq_len = round(sum(train_lengths) / max(1, len(train_lengths)))
    peak_at_shapes = {
        "decode": round(shapes_gflops(decode_rows, hidden, inner), 1),
        "prefill": round(shapes_gflops(max(1, prefill_rows), hidden, inner), 1),
        "train": round(shapes_gflops(tm["batch_size"] * seq_len, hidden, inner), 1),
    }
    th = torch.get_num_threads()
    phases = {
        "train": _phase(train_clock.wall, train_clock.cpu, train_tokens, train_flops, peak, th),
        "prefill": _phase(
            cost["prefill_seconds"],
            cost["prefill_cpu_seconds"],
            cost["prefill_tokens"],
            cost["prefill_flops"],
            peak,
            th,
        ),
        "decode": _phase(
            cost["decode_seconds"],
            cost["decode_cpu_seconds"],
            cost["decode_tokens"],
            cost["decode_flops"],
            peak,
            th,
        ),
        "generate": _phase(
            gen_clock.wall,
            gen_clock.cpu,
            cost["prefill_tokens"] + cost["decode_tokens"],
            cost["prefill_flops"] + cost["decode_flops"],
            peak,
            th,
        ),
        "filter": _phase(filter_clock.wall, filter_clock.cpu, 0, 0.0, peak, th),
    }
    our_train_tps = sum(train_lengths) * tm["epochs"] / train_clock.wall
    out: dict[str, Any] = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "budget": args.budget,
        "objective": args.objective,
        "format": args.format,
        "precision": args.precision,
        "refinement": {
            "num_seeds": gen_cfg.num_seeds,
            "num_steps": gen_cfg.num_steps,
            "samples_per_step": gen_cfg.samples_per_step,
            "temperatures": list(temperatures),
            "batch_size": gen_cfg.batch_size,
            "rows_decoded": int(refinement.metrics["num_generated"]),
            "parse_fail_frac": refinement.metrics["parse_fail_frac"],
        },
        "train_steps": tm["steps"],
        "train_examples": tm["num_train"],
        "proposed": len(chosen),
        "phases": phases,
        "round_seconds": round(train_clock.wall + gen_clock.wall + filter_clock.wall, 2),
        "peak_gflops": round(peak, 1),
        "peak_gflops_wall": round(peak_wall, 1),
        "peak_gflops_bf16": round(peak_bf16, 1),
        "peak_at_shapes": peak_at_shapes,
        "decode_gflops": phases["decode"]["gflops"],
        "prefill_gflops": phases["prefill"]["gflops"],
        "train_gflops": phases["train"]["gflops"],
        "decode_pct_of_peak": phases["decode"]["pct_of_peak"],
        "train_pct_of_peak": phases["train"]["pct_of_peak"],
        "decode_pct_of_peak_cpu": phases["decode"]["pct_of_peak_cpu"],
        "train_pct_of_peak_cpu": phases["train"]["pct_of_peak_cpu"],
        "decode_pct_of_bf16_peak_cpu": round(
            100 * phases["decode"]["gflops_per_cpu_s"] * th / peak_bf16, 1
        ),
        "decode_peer": {"ours": ours, "generate": plain},
        "decode_breakdown": {
            **breakdown,
            # against the peak of the decode's own precision
            "dense_pct_of_peak": round(
                100
                * breakdown["dense"]["gflops"]
                / (peak_bf16 if args.precision == "bf16" else peak),
                1,
            ),
        },
        "decode_vs_generate": round(ours["rows_per_s"] / plain["rows_per_s"], 2),
        "train_peer": sft_peer,
        "train_vs_sft": round(our_train_tps / sft_peer["tokens_per_s"], 2) if sft_peer else None,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
