"""Per-round metrics (regret for Ehrlich, best score, feasible and unique fractions) and the plot."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from api.csvio import write_rows
from api.models import Batch, Campaign, Job, JobStatus, Measurement, OracleKind, Round
from api.schemas.metrics import MetricsRead, RoundMetrics, StepCost
from llome_core import replicates


def compute(session: Session, campaign: Campaign) -> MetricsRead:
    ehrlich = campaign.oracle_kind == OracleKind.EHRLICH
    score = func.coalesce(Measurement.value, 0.0)
    agg = (
        select(
            Measurement.batch_id,
            func.count(),
            func.sum(case((Measurement.feasible, 1), else_=0)),
            func.avg(score),
            func.max(Measurement.value),
        )
        .where(Measurement.campaign_id == campaign.id, Measurement.superseded_at.is_(None))
        .group_by(Measurement.batch_id)
    )
    by_batch = {b: (n, nf, mean, best) for b, n, nf, mean, best in session.execute(agg).tuples()}
    best_labels = _best_labels(session, campaign.id)
    batches = list(
        session.scalars(select(Batch).where(Batch.campaign_id == campaign.id).order_by(Batch.round))
    )
    rounds = {
        r.number: r for r in session.scalars(select(Round).where(Round.campaign_id == campaign.id))
    }
    costs = step_costs(session, campaign)

    out: list[RoundMetrics] = []
    batch_of: dict[int, int | None] = {0: None, **{b.round: b.id for b in batches}}
    calls = 0
    best_so_far: float | None = None

    def row(
        number: int,
        n: int,
        nf: int,
        mean: float | None,
        best: float | None,
        proposed: int | None,
        extra_calls: int,
    ) -> None:
        nonlocal calls, best_so_far
        calls += extra_calls
        if best is not None:
            best_so_far = best if best_so_far is None else max(best_so_far, best)
        rnd = rounds.get(number)
        proposal = (rnd.proposal_metrics if rnd else None) or None
        unique = proposal.get("unique_fraction", proposal.get("unique_frac")) if proposal else None
        out.append(
            RoundMetrics(
                round=number,
                oracle_calls=calls,
                labelled=n,
                feasible_fraction=(nf / n) if n else None,
                unique_fraction=float(unique) if unique is not None else None,
                mean_score=float(mean) if mean is not None else None,
                best_score=best,
                best_so_far=best_so_far,
                **best_labels.get(batch_of.get(number), {}),
                regret=(1.0 - best_so_far)
                if ehrlich and best_so_far is not None
                else (1.0 if ehrlich and n else None),
                mean_regret=(1.0 - float(mean)) if ehrlich and mean is not None else None,
                train=(rnd.train_metrics if rnd else None),
                proposal=proposal,
                round_oracle_calls=extra_calls,
                cost=costs.get(number),
            )
        )

    seed = by_batch.get(None)
    if seed is not None:
        n, nf, mean, best = seed
        seed_round = rounds.get(0)
        ga_calls = (seed_round.proposal_metrics or {}).get("oracle_calls") if seed_round else None
        row(0, n, nf or 0, mean, best, None, int(ga_calls) if ga_calls else n)
    for b in batches:
        n, nf, mean, best = by_batch.get(b.id, (0, 0, None, None))
        row(b.round, n, nf or 0, mean, best, b.size, n)
    return MetricsRead(
        campaign_id=campaign.id, objective="regret" if ehrlich else "score", rounds=out
    )


def _best_labels(session: Session, campaign_id: int) -> dict[int | None, dict[str, Any]]:
    """Per batch (None: seed data), the best label among its sequences (each sequence's label is
    the mean of all its current replicates, wherever they came from) with its n and SE, and how
    many of its sequences have replicates."""
    groups: dict[int, list[tuple[float | None, bool]]] = {}
    batches_of: dict[int | None, set[int]] = {}
    for batch_id, sid, value, feasible in session.execute(
        select(
            Measurement.batch_id, Measurement.sequence_id, Measurement.value, Measurement.feasible
        ).where(Measurement.campaign_id == campaign_id, Measurement.superseded_at.is_(None))
    ).tuples():
        groups.setdefault(sid, []).append((value, bool(feasible)))
        batches_of.setdefault(batch_id, set()).add(sid)
    labels = {sid: replicates.combine(g) for sid, g in groups.items()}
    out: dict[int | None, dict[str, Any]] = {}
    for batch_id, sids in batches_of.items():
        valued = [labels[s] for s in sids if labels[s].value is not None]
        best = max(valued, key=lambda lab: lab.value or 0.0) if valued else None
        out[batch_id] = {
            "best_label": best.value if best else None,
            "best_label_n": best.n if best else None,
            "best_label_se": best.se if best else None,
            "replicated": sum(labels[s].n > 1 for s in sids),
        }
    return out


def step_costs(session: Session, campaign: Campaign) -> dict[int, dict[str, StepCost]]:
    """Per round, each succeeded step's wall, CPU and GPU seconds. The LLOME filter (likelihood
    ranking and composition) runs inside the generate step; when the round's proposal metrics
    time it, it is its own entry and generate is the rest."""
    out: dict[int, dict[str, StepCost]] = {}
    rows = session.execute(
        select(Job.round, Job.step, Job.wall_seconds, Job.cpu_seconds, Job.gpu_seconds).where(
            Job.campaign_id == campaign.id,
            Job.status == JobStatus.SUCCEEDED,
            Job.wall_seconds.is_not(None),
        )
    ).tuples()
    for number, step, wall, cpu, gpu in rows:
        out.setdefault(number, {})[step] = StepCost(wall_s=wall, cpu_s=cpu or 0.0, gpu_s=gpu or 0.0)
    filters = session.execute(
        select(Round.number, Round.proposal_metrics).where(Round.campaign_id == campaign.id)
    ).tuples()
    for number, proposal in filters:
        gen = out.get(number, {}).get("generate")
        if gen is None or not proposal or proposal.get("filter_seconds") is None:
            continue
        wall, cpu = (
            float(proposal["filter_seconds"]),
            float(proposal.get("filter_cpu_seconds", 0.0)),
        )
        gpu = min(wall, gen.gpu_s)
        out[number]["filter"] = StepCost(
            wall_s=round(wall, 3), cpu_s=round(cpu, 3), gpu_s=round(gpu, 3)
        )
        out[number]["generate"] = StepCost(
            wall_s=round(max(0.0, gen.wall_s - wall), 3),
            cpu_s=round(max(0.0, gen.cpu_s - cpu), 3),
            gpu_s=round(max(0.0, gen.gpu_s - gpu), 3),
        )
    return out


COST_STEPS = ("seed", "train", "generate", "filter", "label")
ROUND_COLUMNS = [
    "round",
    "oracle_calls",
    "round_oracle_calls",
    "labelled",
    "best_score",
    "best_so_far",
    "regret",
    "feasible_fraction",
    "unique_fraction",
    *(f"{step}_{kind}" for step in COST_STEPS for kind in ("wall_s", "cpu_s", "gpu_s")),
]


def rounds_csv(metrics: MetricsRead) -> Iterator[str]:
    """The per-round accounting as CSV (``ROUND_COLUMNS``; an empty cell: the step did not run)."""

    def rows() -> Iterator[list[object]]:
        for m in metrics.rounds:
            cost = m.cost or {}
            steps = [
                getattr(cost[step], kind) if step in cost else None
                for step in COST_STEPS
                for kind in ("wall_s", "cpu_s", "gpu_s")
            ]
            yield [
                m.round,
                m.oracle_calls,
                m.round_oracle_calls,
                m.labelled,
                m.best_score,
                m.best_so_far,
                m.regret,
                m.feasible_fraction,
                m.unique_fraction,
                *steps,
            ]

    return write_rows(ROUND_COLUMNS, rows())


def _png(title: str, xlabel: str, ylabel: str, draw: Callable[[Any], bool]) -> bytes:
    """A 6x4 PNG; ``draw(ax)`` plots and says whether there was anything to plot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    if not draw(ax):
        ax.text(0.5, 0.5, "no labelled data yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, parse_math=False)  # a campaign name is plain text, "$" and all
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_png(metrics: MetricsRead, title: str) -> bytes:
    """Best score (or regret, for Ehrlich) against cumulative oracle calls."""
    regret = metrics.objective == "regret"

    def draw(ax: Any) -> bool:
        pts = [(m.oracle_calls, m.regret if regret else m.best_so_far) for m in metrics.rounds]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", drawstyle="steps-post")
        return bool(pts)

    ylabel = "min regret (1 - best score)" if regret else "best score"
    return _png(title, "oracle calls", ylabel, draw)


def fractions_png(metrics: MetricsRead, title: str) -> bytes:
    """Feasible % and unique % of each round's labelled sequences."""
    rounds = [r for r in metrics.rounds if r.labelled]

    def draw(ax: Any) -> bool:
        ax.set_ylim(-5, 105)
        if not rounds:
            return False
        for attr, label, style in (
            ("feasible_fraction", "feasible %", "-o"),
            ("unique_fraction", "unique %", "--s"),
        ):
            pts = [
                (r.round, 100 * getattr(r, attr)) for r in rounds if getattr(r, attr) is not None
            ]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        ax.set_xticks([r.round for r in rounds])
        ax.legend()
        return True

    return _png(title, "round (0: seed data)", "% of the round's sequences", draw)
