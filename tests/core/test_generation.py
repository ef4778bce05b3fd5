"""Decoding (constrained and free), iterative refinement (spec §3.4) and the temperature schedule
(§3.5)."""

from __future__ import annotations

import pytest
import torch

from llome_core.config import GenerateConfig, ModelConfig
from llome_core.decoding import (
    DecodeCost,
    _close_mask,
    _stop_mask,
    decode,
    decode_constrained,
    decode_free,
    decode_free_walk,
    format_ids,
)
from llome_core.generation import refine, temperatures_for
from llome_core.modeling import build_model, build_tokenizer
from llome_core.text import TextFormat

V, L = 8, 8
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(V)


@pytest.fixture(scope="module")
def random_model(tokenizer):
    return build_model(TINY, tokenizer, seed=0).eval()


@pytest.fixture(scope="module")
def trained_model(tokenizer):
    """A tiny model taught the json format for a few dozen steps (x -> x with one mutation), so
    that plain greedy decoding is mostly well-formed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread avoids contention on shared cores
    fmt = TextFormat("json")
    model = build_model(TINY, tokenizer, seed=1)
    g = _gen(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    plen = len(tokenizer(fmt.prompt([0] * L))["input_ids"])
    model.train()
    for _ in range(60):
        x = torch.randint(0, V, (16, L), generator=g)
        y = x.clone()
        y[torch.arange(16), torch.randint(0, L, (16,), generator=g)] = torch.randint(
            0, V, (16,), generator=g
        )
        ids = torch.tensor(
            tokenizer([fmt.prompt(a) + fmt.answer(b) for a, b in zip(x.tolist(), y.tolist())])[
                "input_ids"
            ]
        )
        ids = torch.cat([ids, torch.full((16, 1), tokenizer.eos_token_id)], dim=1)
        labels = ids.clone()
        labels[:, :plen] = -100
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def _plain_greedy(model, tok, fmt, inputs):
    enc = tok([fmt.prompt(x) for x in inputs.tolist()], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=fmt.answer_length(L) + 1,
            pad_token_id=tok.pad_token_id,
        )
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [fmt.try_parse(t, V, L) for t in texts]


def _cfg(**kw):
    base = {
        "num_seeds": 4,
        "num_steps": 3,
        "samples_per_step": 3,
        "temperatures": (1.0, 1.5),
        "batch_size": 64,
    }
    base.update(kw)
    return GenerateConfig(**base)


# ------------------------------------------------------------------------------ temperatures
@pytest.mark.parametrize(
    "distance,first",
    [
        (None, 0.6),
        (0.5, 0.6),
        (0.15, 0.6),
        (0.149, 0.8),
        (0.1, 0.8),
        (0.099, 1.0),
        (0.075, 1.0),
        (0.0749, 1.2),
        (0.0, 1.2),
    ],
)
def test_temperatures_follow_the_spec_table(distance, first):
    temps = temperatures_for(distance)
    assert len(temps) == 6
    assert temps == pytest.approx([first + 0.2 * i for i in range(6)])


# ----------------------------------------------------------------------- constrained decoding
def test_our_tokenizer_allows_constrained_decoding_in_both_formats(tokenizer):
    assert format_ids(tokenizer, TextFormat("json"), V, L) is not None
    assert format_ids(tokenizer, TextFormat("compact"), V, L) is not None
    # a tokenizer over fewer states cannot write every state of this problem
    assert format_ids(build_tokenizer(4), TextFormat("json"), V, L) is None


def test_constrained_greedy_equals_plain_greedy_generate(trained_model, tokenizer):
    fmt = TextFormat("json")
    inputs = torch.randint(0, V, (48, L), generator=_gen(7))
    plain = _plain_greedy(trained_model, tokenizer, fmt, inputs)
    d = decode(
        trained_model,
        tokenizer,
        fmt,
        inputs,
        0.0,
        num_states=V,
        generator=_gen(0),
        batch_size=20,
        strict=True,
    )
    well_formed = [i for i, p in enumerate(plain) if isinstance(p, list)]
    assert len(well_formed) >= 24, "the fixture model should mostly write the format"
    assert d.valid.all()
    for i in well_formed:
        assert d.outputs[i].tolist() == plain[i]


def test_free_greedy_agrees_with_constrained_greedy(trained_model, tokenizer):
    fmt = TextFormat("json")
    inputs = torch.randint(0, V, (24, L), generator=_gen(8))
    c = decode(
        trained_model,
        tokenizer,
        fmt,
        inputs,
        0.0,
        num_states=V,
        generator=_gen(0),
        strict=True,
    )
    f = decode(
        trained_model,
        tokenizer,
        fmt,
        inputs,
        0.0,
        num_states=V,
        generator=_gen(0),
        decoding="free",
        max_new_tokens=40,
    )
    assert f.valid.sum() >= 12
    assert torch.equal(f.outputs[f.valid], c.outputs[f.valid])
    torch.testing.assert_close(
        f.log_likelihood[f.valid], c.log_likelihood[f.valid], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("kind", ["json", "compact"])
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.6])
def test_log_likelihood_is_the_mean_scaled_log_prob_of_the_answer(
    random_model, tokenizer, kind, temperature
):
    fmt = TextFormat(kind)
    inputs = torch.randint(0, V, (6, L), generator=_gen(3))
    inputs = torch.cat([inputs, inputs[[0, 0, 2]]])  # shared prompts are prefilled once
    d = decode(random_model, tokenizer, fmt, inputs, temperature, num_states=V, generator=_gen(4))
    # Recompute with one teacher-forced pass over prompt + answer, full vocabulary.
    texts = [fmt.prompt(x) + fmt.answer(y) for x, y in zip(inputs.tolist(), d.outputs.tolist())]
    ids = torch.tensor(tokenizer(texts)["input_ids"])
    n = fmt.answer_length(L)
    with torch.no_grad():
        logits = random_model(ids).logits[:, -n - 1 : -1].double()
    scale = temperature if temperature > 0 else 1.0
    lp = torch.log_softmax(logits / scale, -1).gather(-1, ids[:, -n:, None]).squeeze(-1)
    torch.testing.assert_close(d.log_likelihood, lp.mean(-1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["json", "compact"])
@pytest.mark.parametrize("groups", [[1] * 20, [4] * 5, [3, 1, 7, 3, 1, 5]])
def test_the_fast_neox_walk_computes_what_the_model_computes(random_model, tokenizer, kind, groups):
    # The pure-torch GPT-NeoX forward against model(...) with a transformers StaticCache:
    # same noise, so the same samples; likelihoods equal to float rounding. Rows that share a
    # prompt read its keys and values per block of rows (blocks of the commonest group size,
    # larger groups in several blocks), in any row order.
    fids = format_ids(tokenizer, TextFormat(kind), V, L)
    prompts = torch.randint(0, V, (len(groups), L), generator=_gen(9))
    inputs = prompts.repeat_interleave(torch.tensor(groups), dim=0)
    inputs = inputs[torch.randperm(20, generator=_gen(2))]
    temps = torch.tensor([0.0, 0.7, 1.0, 1.6] * 5)
    fast = decode_constrained(random_model, fids, inputs, temps, _gen(1))
    ref = decode_constrained(random_model, fids, inputs, temps, _gen(1), engine="static-cache")
    assert torch.equal(fast.outputs, ref.outputs)
    torch.testing.assert_close(fast.log_likelihood, ref.log_likelihood, atol=1e-5, rtol=0)


def test_the_walk_counts_its_work_with_each_distinct_prompt_prefilled_once(random_model, tokenizer):
    fmt = TextFormat("json")
    fids = format_ids(tokenizer, fmt, V, L)
    inputs = torch.randint(0, V, (3, L), generator=_gen(10)).repeat_interleave(5, dim=0)
    cost = DecodeCost()
    decode_constrained(random_model, fids, inputs, torch.ones(15), _gen(1), cost=cost)
    prompt = len(tokenizer(fmt.prompt([0] * L))["input_ids"]) + 1  # and the opening bracket
    assert cost.rows == 15
    assert cost.prefill_tokens == 3 * prompt
    assert cost.decode_tokens == 15 * (fmt.answer_length(L) - 2)  # '[' prefilled, ']' not fed
    assert cost.prefill_flops > 0 and cost.decode_flops > 0 and cost.decode_seconds > 0


def test_constrained_sampling_follows_the_renormalized_state_distribution(random_model, tokenizer):
    fmt = TextFormat("json")
    T, n = 1.3, 4000
    x = torch.randint(0, V, (1, L), generator=_gen(5))
    d = decode(
        random_model,
        tokenizer,
        fmt,
        x.expand(n, -1),
        T,
        num_states=V,
        generator=_gen(6),
        batch_size=n,
    )
    ids = torch.tensor(tokenizer([fmt.prompt(x[0].tolist()) + "["])["input_ids"])
    with torch.no_grad():
        logits = random_model(ids).logits[0, -1]
    states = torch.tensor([tokenizer.convert_tokens_to_ids(str(i)) for i in range(V)])
    expected = torch.softmax(logits[states] / T, -1)
    observed = torch.bincount(d.outputs[:, 0], minlength=V).double() / n
    assert (observed - expected).abs().max() < 0.03  # ~4 standard errors at n = 4000


# ------------------------------------------------------------------------------ refinement
def test_refine_counts_every_decoded_output_and_wastes_none(random_model, tokenizer):
    seeds = torch.randint(0, V, (4, L), generator=_gen(1))
    cfg = _cfg()
    r = refine(
        random_model,
        tokenizer,
        TextFormat("json"),
        seeds,
        num_states=V,
        dim=L,
        config=cfg,
        temperatures=(1.0, 1.5),
        generator=_gen(2),
    )
    assert r.metrics["num_generated"] == 4 * (1 + 2 * 3) * 3
    assert r.metrics["parse_fail_frac"] == 0.0
    assert r.metrics["constrained"] == 1.0
    seqs = [c.sequence for c in r.candidates]
    assert len(seqs) == len(set(seqs)) == r.metrics["num_unique"]
    assert r.metrics["unique_frac"] == len(seqs) / r.metrics["num_valid"]
    assert all(len(s) == L and all(0 <= v < V for v in s) for s in seqs)
    assert 0.0 <= r.metrics["mean_edit_distance"] <= 1.0
    assert [p["step"] for p in r.per_step] == [1.0, 2.0, 3.0]


def test_refine_lineage_and_pool_order(random_model, tokenizer):
    seeds = torch.randint(0, V, (5, L), generator=_gen(11))
    r = refine(
        random_model,
        tokenizer,
        TextFormat("compact"),
        seeds,
        num_states=V,
        dim=L,
        config=_cfg(),
        temperatures=(1.0, 1.5),
        generator=_gen(12),
        keep_trace=True,
    )
    seed_set = {tuple(s) for s in seeds.tolist()}
    outputs = {tuple(o) for o in r.trace.outputs.tolist()}
    for c in r.candidates:
        assert c.seed in seed_set
        assert c.temperature in (None, 1.0, 1.5)
        assert 1 <= c.refinement_step <= 3
        if c.refinement_step == 1:
            assert c.parent == c.seed
        else:
            assert c.parent == c.seed or c.parent in outputs
    # greedy first, then temperatures in the given order
    runs = [
        0 if c.temperature is None else (1 if c.temperature == 1.0 else 2) for c in r.candidates
    ]
    assert runs == sorted(runs)


def test_next_input_is_the_best_valid_output_of_the_trajectory_so_far(random_model, tokenizer):
    seeds = torch.randint(0, V, (3, L), generator=_gen(21))
    r = refine(
        random_model,
        tokenizer,
        TextFormat("json"),
        seeds,
        num_states=V,
        dim=L,
        config=_cfg(num_steps=4),
        temperatures=(1.2,),
        generator=_gen(22),
        keep_trace=True,
    )
    tr = r.trace
    s = seeds.shape[0]
    for traj in range(2 * s):
        rows = (tr.trajectory == traj).nonzero().reshape(-1)
        best, best_ll = seeds[traj % s], float("-inf")
        for step in range(1, 5):
            here = rows[tr.step[rows] == step]
            assert all(torch.equal(tr.parents[i], best) for i in here.tolist())
            for i in here.tolist():  # earliest wins ties
                if tr.valid[i] and tr.log_likelihood[i] > best_ll:
                    best, best_ll = tr.outputs[i], float(tr.log_likelihood[i])


def test_refine_is_reproducible_from_the_generator(random_model, tokenizer):
    seeds = torch.randint(0, V, (3, L), generator=_gen(31))
    args = {"num_states": V, "dim": L, "config": _cfg(batch_size=7), "temperatures": (1.0,)}
    a = refine(random_model, tokenizer, TextFormat("json"), seeds, generator=_gen(1), **args)
    b = refine(random_model, tokenizer, TextFormat("json"), seeds, generator=_gen(1), **args)
    c = refine(random_model, tokenizer, TextFormat("json"), seeds, generator=_gen(2), **args)
    assert a.candidates == b.candidates
    assert [x.sequence for x in a.candidates] != [x.sequence for x in c.candidates]


def test_free_decoding_counts_failures_by_reason_and_feeds_on_only_valid_outputs(
    trained_model, tokenizer
):
    # The paper's decoding with our tokenizer: sample freely, parse, drop failures.
    seeds = torch.randint(0, V, (6, L), generator=_gen(41))
    args = {
        "num_states": V,
        "dim": L,
        "config": _cfg(num_steps=3, samples_per_step=4, decoding="free"),
        "temperatures": (1.6,),
        "keep_trace": True,
    }
    a = refine(trained_model, tokenizer, TextFormat("json"), seeds, generator=_gen(1), **args)
    b = refine(trained_model, tokenizer, TextFormat("json"), seeds, generator=_gen(1), **args)
    m, tr = a.metrics, a.trace
    assert m["constrained"] == 0.0
    assert m["num_generated"] == 6 * (1 + 4) * 3
    failed = sum(v for k, v in m.items() if k.startswith("parse_fail_") and k != "parse_fail_frac")
    assert failed == m["num_generated"] - m["num_valid"] > 0
    assert 0 < m["parse_fail_frac"] < 1
    assert m["parse_fail_frac"] == pytest.approx(1 - float(tr.valid.float().mean()))
    # Every input is a seed or a valid output of an earlier step; candidates are valid outputs.
    valid_out = {tuple(o) for o in tr.outputs[tr.valid].tolist()}
    seed_set = {tuple(x) for x in seeds.tolist()}
    assert all(tuple(p) in seed_set | valid_out for p in tr.parents.tolist())
    assert {c.sequence for c in a.candidates} <= valid_out
    assert a.candidates == b.candidates and a.metrics["num_valid"] == b.metrics["num_valid"]


def test_refine_reports_progress_per_chunk(random_model, tokenizer):
    calls = []
    seeds = torch.randint(0, V, (2, L), generator=_gen(51))
    refine(
        random_model,
        tokenizer,
        TextFormat("json"),
        seeds,
        num_states=V,
        dim=L,
        config=_cfg(num_steps=2, samples_per_step=2, batch_size=4),
        temperatures=(1.0,),
        generator=_gen(1),
        reporter=lambda *a: calls.append(a),
    )
    # 2 seeds x (1 + 2) rows = 6 rows per step -> 2 chunks of 4 per step
    assert calls == [("generate", i, 4) for i in range(1, 5)]


def test_refine_rejects_bad_seeds(random_model, tokenizer):
    with pytest.raises(ValueError, match=r"seeds must be \(s, 8\)"):
        refine(
            random_model,
            tokenizer,
            TextFormat("json"),
            torch.zeros(2, 5, dtype=torch.long),
            num_states=V,
            dim=L,
            config=_cfg(),
            temperatures=(1.0,),
            generator=_gen(0),
        )
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        refine(
            random_model,
            tokenizer,
            TextFormat("json"),
            torch.full((2, L), 9),
            num_states=V,
            dim=L,
            config=_cfg(),
            temperatures=(1.0,),
            generator=_gen(0),
        )


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_bf16_decoding_walks_a_bf16_copy_and_leaves_the_callers_model_fp32(
    random_model, tokenizer, kind
):
    # The fast walk on the copy computes what model(...) computes on it: same noise, same samples.
    # Greedy is the copy's own argmax; the caller's model keeps fp32 (it is trained next round).
    fids = format_ids(tokenizer, TextFormat(kind), V, L)
    inputs = torch.randint(0, V, (5, L), generator=_gen(9)).repeat_interleave(4, dim=0)
    temps = torch.tensor([0.0, 0.7, 1.0, 1.6] * 5)
    half = build_model(TINY, tokenizer, seed=0).eval().to(torch.bfloat16)
    fast = decode_constrained(half, fids, inputs, temps, _gen(1))
    ref = decode_constrained(half, fids, inputs, temps, _gen(1), engine="static-cache")
    assert torch.equal(fast.outputs, ref.outputs)
    torch.testing.assert_close(fast.log_likelihood, ref.log_likelihood, atol=2e-2, rtol=0)
    # Through decode(precision="bf16"): every row valid, the same rows as the copy gives.
    d = decode(
        random_model,
        tokenizer,
        TextFormat(kind),
        inputs,
        temps,
        num_states=V,
        generator=_gen(4),
        precision="bf16",
    )
    again = decode(
        half,
        tokenizer,
        TextFormat(kind),
        inputs,
        temps,
        num_states=V,
        generator=_gen(4),
        precision="bf16",
    )
    assert d.valid.all() and torch.equal(d.outputs, again.outputs)
    assert next(random_model.parameters()).dtype == torch.float32


def test_bf16_free_decoding_parses_and_an_unknown_precision_is_refused(random_model, tokenizer):
    fmt = TextFormat("json")
    inputs = torch.randint(0, V, (4, L), generator=_gen(3))
    d = decode(
        random_model,
        tokenizer,
        fmt,
        inputs,
        1.0,
        num_states=V,
        generator=_gen(4),
        decoding="free",
        precision="bf16",
        max_new_tokens=fmt.answer_length(L) + 2,
    )
    assert d.log_likelihood.dtype == torch.float64 and torch.isfinite(d.log_likelihood).all()
    assert d.valid.sum() + sum(d.failures.values()) == 4
    with pytest.raises(ValueError, match="precision"):
        decode(
            random_model,
            tokenizer,
            fmt,
            inputs,
            1.0,
            num_states=V,
            generator=_gen(4),
            precision="fp16",
        )  # type: ignore[arg-type]


@pytest.mark.parametrize("model_name", ["trained_model", "random_model"])
def test_the_free_walk_decodes_greedily_what_generate_decodes(model_name, tokenizer, request):
    # Free decoding with our tokenizer runs on the walk's engine; greedy, it writes exactly what
    # model.generate writes (well-formed or not), with the same likelihoods and failure counts.
    model = request.getfixturevalue(model_name)
    fmt = TextFormat("json")
    inputs = torch.randint(0, V, (24, L), generator=_gen(8))
    inputs = torch.cat([inputs, inputs[:4]])  # shared prompts are prefilled once
    fids = format_ids(tokenizer, fmt, V, L)
    mask = _close_mask(
        tokenizer, model.get_output_embeddings().weight.shape[0], torch.device("cpu")
    )
    new_tokens = fmt.answer_length(L) + 4
    common = {"num_states": V, "max_new_tokens": new_tokens}
    walk = decode_free_walk(
        model,
        tokenizer,
        fmt,
        fids,
        inputs,
        torch.zeros(len(inputs)),
        _gen(1),
        stop_mask=_stop_mask(model, mask),
        **common,
    )
    plain = decode_free(model, tokenizer, fmt, inputs, 0.0, seed=0, close_mask=mask, **common)
    assert torch.equal(walk.valid, plain.valid) and walk.failures == plain.failures
    assert torch.equal(walk.outputs[walk.valid], plain.outputs[plain.valid])
    torch.testing.assert_close(
        walk.log_likelihood[walk.valid], plain.log_likelihood[plain.valid], atol=1e-5, rtol=0
    )
    if model_name == "trained_model":
        assert walk.valid.sum() >= 12


def test_the_free_walk_samples_the_full_vocabulary_at_the_rows_temperature(random_model, tokenizer):
    fmt = TextFormat("json")
    T, n = 1.3, 4000
    x = torch.randint(0, V, (1, L), generator=_gen(5))
    fids = format_ids(tokenizer, fmt, V, L)
    mask = _close_mask(
        tokenizer, random_model.get_output_embeddings().weight.shape[0], torch.device("cpu")
    )
    d = decode_free_walk(
        random_model,
        tokenizer,
        fmt,
        fids,
        x.expand(n, -1),
        torch.full((n,), T),
        _gen(6),
        num_states=V,
        max_new_tokens=1,
        stop_mask=_stop_mask(random_model, mask),
    )
    # One token each: its likelihood names it (the log-probability of the token drawn).
    ids = torch.tensor(tokenizer([fmt.prompt(x[0].tolist())])["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(random_model(ids).logits[0, -1].double() / T, -1)
    drawn = (d.log_likelihood[:, None] - logp[None, :]).abs().argmin(-1)
    observed = torch.bincount(drawn, minlength=logp.shape[0]).double() / n
    assert (observed - logp.exp()).abs().max() < 0.03  # ~4 standard errors at n = 4000
