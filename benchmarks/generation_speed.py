"""Inner-loop generation speed: our refinement decoder vs plain ``model.generate`` (issue 6).

Same model, same prompts, same run. Ours: :func:`llome_core.generation.refine` for one step, one
sampling temperature, ``--samples`` rows per prompt (constrained, KV cache, ``--batch-size``
rows per forward). Theirs: ``model.generate(do_sample=True)`` in the same batches, decoding
exactly the answer's number of tokens (no early stop), each prompt repeated ``--samples`` times,
then :meth:`TextFormat.parse` to count valid outputs.

    python -m benchmarks.generation_speed --shape tiny --prompts 512 --batch-size 256
    python -m benchmarks.generation_speed --shape 160m --device cuda --dtype bf16 --prompts 4096

Models are random-init Pythia shapes with our word-level tokenizer (so the output layer is tiny;
a real 50k vocabulary adds one large matmul per token to both paths).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, cast

import torch

from llome_core.config import GenerateConfig, ModelConfig
from llome_core.generation import refine
from llome_core.modeling import build_model, build_tokenizer
from llome_core.text import TextFormat

# name -> (hidden, layers, heads): the tiny default and Pythia's shapes.
SHAPES: dict[str, tuple[int, int, int]] = {
    "tiny": (128, 4, 4),
    "160m": (768, 12, 12),
    "410m": (1024, 24, 16),
    "1b": (2048, 16, 8),
    "2.8b": (2560, 32, 32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(
    model, tok, fmt, prompts, *, num_states, batch_size, temperature, seed, samples
) -> dict:
    cfg = GenerateConfig(
        num_steps=1,
        samples_per_step=samples,
        temperatures=(temperature,),
        greedy=False,
        batch_size=batch_size,
    )
    device = next(model.parameters()).device
    _sync(device)
    t0 = time.perf_counter()
    r = refine(
        model,
        tok,
        fmt,
        prompts,
        num_states=num_states,
        dim=prompts.shape[1],
        config=cfg,
        temperatures=(temperature,),
        generator=torch.Generator().manual_seed(seed),
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    n = int(r.metrics["num_generated"])
    return {
        "seconds": seconds,
        "sequences_per_s": n / seconds,
        "valid_frac": r.metrics["num_valid"] / n,
        "constrained": bool(r.metrics["constrained"]),
    }


@torch.inference_mode()
def run_generate(
    model, tok, fmt, prompts, *, num_states, batch_size, temperature, seed, samples
) -> dict:
    device = next(model.parameters()).device
    dim = prompts.shape[1]
    new_tokens = fmt.answer_length(dim)
    texts = [fmt.prompt(x) for x in prompts.repeat_interleave(samples, dim=0).tolist()]
    valid = 0
    torch.manual_seed(seed)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        enc = tok(
            texts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="left"
        ).to(device)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tok.pad_token_id,
        )
        decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        valid += sum(isinstance(fmt.try_parse(t, num_states, dim), list) for t in decoded)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "sequences_per_s": len(texts) / seconds,
        "valid_frac": valid / len(texts),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="llome bench generation-speed", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--num-states", type=int, default=32)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--format", choices=["json", "compact"], default="json")
    p.add_argument("--prompts", type=int, default=512, help="distinct prompts")
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help="samples per prompt (the inner loop draws 10 per trajectory input)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward batch, both paths")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    hidden, layers, heads = SHAPES[args.shape]
    tok = build_tokenizer(args.num_states)
    fmt = TextFormat(args.format)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    model = build_model(
        ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads), tok, args.seed
    )
    model = cast(Any, model).to(device=args.device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(args.seed)
    prompts = torch.randint(0, args.num_states, (args.prompts, args.dim), generator=g)
    kw = {
        "num_states": args.num_states,
        "batch_size": args.batch_size,
        "temperature": args.temperature,
        "seed": args.seed,
        "samples": args.samples,
    }

    warm = prompts[: min(8, len(prompts))]  # first calls pay for allocations and kernel selection
    run_ours(model, tok, fmt, warm, **kw)
    run_generate(model, tok, fmt, warm, **kw)
    ours = run_ours(model, tok, fmt, prompts, **kw)
    plain = run_generate(model, tok, fmt, prompts, **kw)
    result = {
        "device": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else "cpu",
        "threads": torch.get_num_threads(),
        "shape": args.shape,
        "params_m": round(sum(q.numel() for q in model.parameters()) / 1e6, 2),
        "dtype": args.dtype,
        "format": args.format,
        "v": args.num_states,
        "L": args.dim,
        "prompts": args.prompts,
        "samples_per_prompt": args.samples,
        "batch_size": args.batch_size,
        "ours": ours,
        "generate": plain,
        "speedup": ours["sequences_per_s"] / plain["sequences_per_s"],
        # valid outputs per second; undefined while plain generate writes no valid answer
        "valid_per_s_speedup": (
            ours["sequences_per_s"]
            * ours["valid_frac"]
            / (plain["sequences_per_s"] * plain["valid_frac"])
            if plain["valid_frac"] > 0
            else None
        ),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
