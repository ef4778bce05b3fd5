"""Campaign requests and responses. Defaults come from ``llome_core.config`` (the paper's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, computed_field, field_validator, model_validator

from api.notation import parse_ttl
from api.schemas.common import Page, Progress, Strict, params_from_dataclass
from llome_core.config import (
    EhrlichConfig,
    GAConfig,
    GenerateConfig,
    LoopConfig,
    ModelConfig,
    TrainConfig,
    default_replay_fraction,
    parse_schedule,
    refinement_budget,
)
from llome_core.sequences import EHRLICH_LETTERS, Alphabet
from llome_core.stopping import StopRule

_EHRLICH = EhrlichConfig()
_LOOP = LoopConfig()

TrainParams = params_from_dataclass("TrainParams", TrainConfig)
GenerateParams = params_from_dataclass("GenerateParams", GenerateConfig)
GASeedingParams = params_from_dataclass(
    "GASeedingParams",
    GAConfig,
    doc="The genetic algorithm that makes an Ehrlich campaign's seed data (paper: 10 steps of "
    "1000 particles). `seed` is the GA's own random seed.",
)
_ModelBase = params_from_dataclass("ModelBase", ModelConfig, exclude=("path",))
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class ModelParams(_ModelBase):  # type: ignore[misc,valid-type]
    """The language model: the tiny default built locally (no ``name``, no ``from_campaign``),
    a model the operator registered (``"model": "pythia-160m"``, listed by ``GET /models``), or
    the checkpoint of one of the lab's own campaigns (``{"from_campaign": ID}``, its latest
    trained round unless ``round`` says which). Server paths are never accepted."""

    name: str | None = Field(None, pattern=MODEL_NAME, description="a registered model's name")
    from_campaign: int | None = Field(
        None, ge=1, le=2**31 - 1, description="continue from this campaign's checkpoint"
    )
    round: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="with from_campaign: whose "
        "round's checkpoint (default: its latest trained round)",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> ModelParams:
        if self.name is not None and self.from_campaign is not None:
            raise ValueError("name a registered model or from_campaign, not both")
        if self.round is not None and self.from_campaign is None:
            raise ValueError("round goes with from_campaign")
        return self


class EhrlichParams(Strict):
    """A synthetic Ehrlich oracle (holo's parameter names). Sequences are written with the first
    ``num_states`` letters of ``ABC...Zabc...z0...9`` (state 0 = ``A``)."""

    kind: Literal["ehrlich"]
    preset: str | None = Field(
        None, description="a preset name like ehr_v-32_l-032_m-4_c-4_q-4; sets the shape"
    )
    num_states: int = Field(_EHRLICH.num_states, ge=2, le=len(EHRLICH_LETTERS))
    dim: int = Field(_EHRLICH.dim, ge=1, le=4096)
    num_motifs: int = Field(_EHRLICH.num_motifs, ge=1)
    motif_length: int = Field(_EHRLICH.motif_length, ge=1)
    # None means motif_length (holo's convention); the paper's default instance has q = k = 4.
    quantization: int | None = Field(None, ge=1)
    epistasis_factor: float = _EHRLICH.epistasis_factor
    seed: int = Field(
        _EHRLICH.random_seed, ge=0, le=2**31 - 1, description="the instance's random_seed"
    )
    seeding: GASeedingParams = Field(default_factory=GASeedingParams)  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset"):
            from llome_core.ehrlich import preset_config

            cfg = preset_config(str(data["preset"]))  # ValueError names the known presets
            shape = {
                "num_states": cfg.num_states,
                "dim": cfg.dim,
                "num_motifs": cfg.num_motifs,
                "motif_length": cfg.motif_length,
                "quantization": cfg.quantization,
            }
            data = {**shape, **data}
        return data

    @model_validator(mode="after")
    def _valid_instance(self) -> EhrlichParams:
        self.to_config()  # EhrlichConfig's checks: motifs fit, quantization divides k
        from llome_core.ga import check_config

        if not 0 <= self.seeding.seed < 2**31:  # type: ignore[attr-defined]
            raise ValueError("seeding.seed: must be between 0 and 2147483647")
        try:
            check_config(GAConfig(**self.seeding.model_dump()))  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ValueError(f"seeding: {exc}") from None
        return self

    def to_config(self) -> EhrlichConfig:
        return EhrlichConfig(
            num_states=self.num_states,
            dim=self.dim,
            num_motifs=self.num_motifs,
            motif_length=self.motif_length,
            quantization=self.quantization,
            epistasis_factor=self.epistasis_factor,
            random_seed=self.seed,
        )

    def alphabet(self) -> Alphabet:
        return Alphabet.for_ehrlich(self.num_states)


class WetlabParams(Strict):
    """A lab measures the candidates and uploads the results as CSV."""

    kind: Literal["wetlab"]
    alphabet: str = Field(..., min_length=2, max_length=64, examples=["ACDEFGHIKLMNPQRSTVWY"])
    length: int = Field(..., ge=1, le=4096)
    reference: str | None = Field(
        None,
        description="a reference (wild-type) sequence: each "
        "candidate's mutations against it are stored (ProteinGym notation)",
    )
    label_ttl: str | None = Field(
        None,
        description="a candidate not measured this long after its "
        "release (or proposal) expires, e.g. '14d', '36h', '2w'",
        examples=["14d"],
    )

    @field_validator("alphabet")
    @classmethod
    def _valid_alphabet(cls, v: str) -> str:
        Alphabet(v)  # ValueError says what is wrong
        return v

    @field_validator("label_ttl")
    @classmethod
    def _valid_ttl(cls, v: str | None) -> str | None:
        if v is not None:
            parse_ttl(v)
        return v

    @model_validator(mode="after")
    def _valid_reference(self) -> WetlabParams:
        if self.reference is not None:
            Alphabet(self.alphabet).encode_one(self.reference, self.length)  # says what is wrong
        return self


OracleParams = Annotated[EhrlichParams | WetlabParams, Field(discriminator="kind")]


class Composition(Strict):
    """Batch composition controls; what they remove is recorded in the round's
    ``proposal`` metrics under ``composition``."""

    min_hamming: int = Field(
        0,
        ge=0,
        description="least number of differing positions between any "
        "two candidates of a batch and to every measured sequence (0: off)",
    )
    exclude: list[str] = Field(default_factory=list, description="sequences never to propose")
    controls: list[str] = Field(
        default_factory=list,
        description="sequences added to every batch "
        "for plate normalisation ('best': the best measured so far), marked "
        "as controls and not counted against the budget",
    )


class LlomeParams(Composition):
    """LLOME: train the language model each round, refine, filter."""

    kind: Literal["llome"]
    objective: str = Field(
        _LOOP.objective,
        description="sft | dpo | marge | reinforce (round 1 is SFT), or a schedule like sft1-marge9",
    )
    train: TrainParams = Field(default_factory=TrainParams)  # type: ignore[valid-type]
    generate: GenerateParams = Field(default_factory=GenerateParams)  # type: ignore[valid-type]

    @field_validator("objective")
    @classmethod
    def _valid_objective(cls, v: str) -> str:
        parse_schedule(v, 1)
        return v.lower().strip()


class GAParams(Composition):
    """The genetic algorithm as the optimizer: one GA step of ``batch_size`` particles per round."""

    kind: Literal["ga"]
    mutation_prob: float = Field(GAConfig.mutation_prob, gt=0, lt=1)
    recombine_prob: float = Field(GAConfig.recombine_prob, ge=0, lt=1)
    survival_quantile: float = Field(GAConfig.survival_quantile, gt=0, lt=1)


OptimizerParams = Annotated[LlomeParams | GAParams, Field(discriminator="kind")]


class StopParams(Strict):
    """Stop before the last round, checked after every labelled round; when a rule fires the
    campaign is completed and ``stop_reason`` names the rule and the value."""

    target_score: float | None = Field(None, description="stop once the best label reaches it")
    patience_rounds: int | None = Field(
        None, ge=1, le=1000, description="stop after this many rounds without a better best label"
    )
    max_oracle_calls: int | None = Field(
        None,
        ge=1,
        description="stop before a round would take "
        "the oracle calls (seed data included) past this",
    )

    def to_rule(self) -> StopRule:
        return StopRule(**self.model_dump())


NOTIFY_EVENTS = ("batch_ready", "labels_overdue", "failed", "completed")
NotifyEvent = Literal["batch_ready", "labels_overdue", "failed", "completed"]


class CampaignCreate(Strict):
    name: str = Field(..., min_length=1, max_length=200)
    oracle: OracleParams
    optimizer: OptimizerParams = Field(default_factory=lambda: LlomeParams(kind="llome"))
    batch_size: int = Field(
        _LOOP.batch_size, ge=1, le=100_000, description="oracle calls per round"
    )
    rounds: int = Field(_LOOP.rounds, ge=1, le=1000)
    seed: int = Field(_LOOP.seed, ge=0, le=2**31 - 1, description="the campaign's random seed")
    stop: StopParams = Field(default_factory=StopParams)
    normalize: Literal["none", "control_ratio", "control_difference"] = Field(
        "none",
        description="plate effects: train on each batch's scores divided by "
        "(control_ratio) or minus (control_difference) the mean of that batch's control "
        "measurements (optimizer.controls); raw values are kept and shown beside them",
    )
    notify_url: str | None = Field(
        None,
        max_length=2000,
        description="POST a signed JSON here "
        "on each event (the operator's LLOME_NOTIFY_ALLOWED_HOSTS)",
    )
    notify_events: list[NotifyEvent] | None = Field(None, description="which events (default: all)")
    model: ModelParams = Field(  # type: ignore[valid-type]
        default_factory=ModelParams,
        description="the tiny default (omit, or give its sizes), a registered model's name "
        '("pythia-160m", see GET /models), or {"from_campaign": ID} for one of the lab\'s own '
        "campaigns' checkpoints",
    )

    @field_validator("notify_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{v!r} is not an http or https URL with a host")
        return v

    @model_validator(mode="after")
    def _fits(self) -> CampaignCreate:
        if self.normalize != "none" and not self.optimizer.controls:
            raise ValueError(
                f"normalize {self.normalize!r} needs controls on every batch: set "
                "optimizer.controls (e.g. the parent sequence, or 'best')"
            )
        if isinstance(self.optimizer, LlomeParams):
            # The core's defaults that follow the batch size (the replay rule, the refinement
            # budget), resolved and stored in the spec, so GET /campaigns/{id} shows the values
            # in force.
            train: Any = self.optimizer.train  # models made from the core's dataclasses
            gen: Any = self.optimizer.generate
            if train.replay_fraction is None:
                train.replay_fraction = default_replay_fraction(self.batch_size)
            if gen.num_seeds is None or gen.samples_per_step is None:
                seeds, samples = refinement_budget(self.batch_size, gen.num_steps, gen.greedy)
                gen.num_seeds = seeds if gen.num_seeds is None else gen.num_seeds
                if gen.samples_per_step is None:
                    gen.samples_per_step = samples
        if (
            isinstance(self.optimizer, GAParams)
            and self.optimizer.survival_quantile * self.batch_size < 2
        ):
            raise ValueError(
                "survival_quantile * batch_size must be at least 2 (the GA needs two parents)"
            )
        oracle = self.oracle
        alphabet = (
            oracle.alphabet() if isinstance(oracle, EhrlichParams) else Alphabet(oracle.alphabet)
        )
        length = oracle.dim if isinstance(oracle, EhrlichParams) else oracle.length
        for name, seqs in (
            ("exclude", self.optimizer.exclude),
            ("controls", self.optimizer.controls),
        ):
            for seq in seqs:
                if name == "controls" and seq == "best":
                    continue
                try:
                    alphabet.encode_one(seq, length)
                except ValueError as exc:
                    raise ValueError(f"optimizer.{name}: sequence {seq!r}: {exc}") from None
        return self

    def loop_config(self, device: str, model_path: str | None = None) -> LoopConfig:
        """The loop's config; ``model_path`` is where the server keeps the named model (the
        registry or the source campaign's checkpoint resolve it), None for the tiny default."""
        assert isinstance(self.optimizer, LlomeParams)
        sizes = self.model.model_dump(exclude={"name", "from_campaign", "round"})
        train = self.optimizer.train.model_dump()  # type: ignore[attr-defined]
        return LoopConfig(
            objective=self.optimizer.objective,
            rounds=self.rounds,
            batch_size=self.batch_size,
            seed=self.seed,
            device=device,
            model=ModelConfig(path=model_path, **sizes),
            train=TrainConfig(**train),
            generate=GenerateConfig(**self.optimizer.generate.model_dump()),  # type: ignore[attr-defined]
        )


class RefinementBudget(BaseModel):
    """The inner loop's volume per round (``llome_core.config.refinement_budget`` unless set)."""

    num_seeds: int
    num_steps: int
    samples_per_step: int
    outputs_per_round: int = Field(description="seeds x steps x (greedy + temperatures x samples)")
    outputs_per_oracle_call: float = Field(description="the paper's is 61 (at 2000 calls)")


class CampaignRead(BaseModel):
    id: int
    name: str
    status: str
    round: int = Field(description="the round in progress (0 while seeding)")
    rounds: int
    batch_size: int
    seed: int
    alphabet: str
    length: int
    oracle: dict[str, Any]
    optimizer: dict[str, Any]
    model: dict[str, Any]
    progress: Progress
    error: str | None = None
    stop: dict[str, Any] | None = Field(None, description="the stop rules in force")
    stop_reason: str | None = Field(
        None,
        description="the rule that completed the campaign, "
        "with its value, e.g. 'target_score 0.9 reached: best 0.93 "
        "in round 3'",
    )
    notify_url: str | None = None
    notify_events: list[str] | None = None
    notify_secret: str | None = Field(
        None, description="the key of the X-Llome-Signature HMAC, in the creation response only"
    )
    twin_of: int | None = Field(
        None,
        description="a synthetic twin: the wet-lab campaign it "
        "mirrors (that campaign's GET .../forecast reads it)",
    )
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def refinement_budget(self) -> RefinementBudget | None:
        """LLOME's refinement budget in force (None for the GA)."""
        gen = self.optimizer.get("generate") if self.optimizer.get("kind") == "llome" else None
        if not gen or gen.get("num_seeds") is None or gen.get("samples_per_step") is None:
            return None
        per_seed = int(bool(gen.get("greedy", True))) + len(gen.get("temperatures") or ()) * int(
            gen["samples_per_step"]
        )
        outputs = int(gen["num_seeds"]) * int(gen["num_steps"]) * per_seed
        return RefinementBudget(
            num_seeds=gen["num_seeds"],
            num_steps=gen["num_steps"],
            samples_per_step=gen["samples_per_step"],
            outputs_per_round=outputs,
            outputs_per_oracle_call=round(outputs / max(1, self.batch_size), 1),
        )


CampaignPage = Page[CampaignRead]
