"""Typed, versioned records written into a run folder (schema documented in docs/run-folder.md).

Every record carries ``schema_version``; readers accept any version up to :data:`SCHEMA_VERSION`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 3  # 2: CandidateRecord.usage (API tokens and cost); 3: CandidateRecord.path (in-loop search)


class MetricScore(BaseModel):
    """One metric of one verifier for one candidate (explanation first, as graders should write it)."""

    explanation: str | None = None
    score: float


class Timings(BaseModel):
    """Seconds spent on this candidate: its share of its batch's generation and verification."""

    generate_s: float = 0.0
    verify_s: float = 0.0


class Usage(BaseModel):
    """What verifying one candidate cost: requests sent (retries included), tokens, estimated USD."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: "Usage") -> "Usage":
        return Usage(requests=self.requests + other.requests, input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens, cost_usd=self.cost_usd + other.cost_usd)


class SafetyAttempt(BaseModel):
    """An earlier, blocked generation of a candidate (tts.run.safety): which pipeline, from which prompt, why."""

    pipeline: str
    rewritten_prompt: str | None = None
    nsfw: bool = False
    black: bool = False


class SafetyRecord(BaseModel):
    """How a candidate's image fared with tts.run.safety: the pipeline's safety-checker flag (``nsfw``) and the
    near-black test (``black``) of the final image; the rewritten prompt it was generated from (None: the
    prompt itself); the pipeline preset that made it (a fallback's name when it is not the search's); the
    blocked attempts before it."""

    nsfw: bool = False
    black: bool = False
    rewritten_prompt: str | None = None
    pipeline: str | None = None
    attempts: list[SafetyAttempt] = Field(default_factory=list)

    @property
    def blocked(self) -> str | None:
        """Why the image is blocked ("nsfw", "black", "nsfw, black"), or None."""
        return ", ".join(name for name, on in (("nsfw", self.nsfw), ("black", self.black)) if on) or None


class PathRecord(BaseModel):
    """How an in-loop strategy's candidate was made (tts.sampling.particles): the operations from its initial noise
    (``start``, ``run``, ``renoise``, and ``from`` markers naming the particle it was copied from at which step),
    the sampler's ``eta`` and first-order ``fallback`` (None: the pipeline's own scheduler), its particle id and
    parent, and its NFEs: ``nfe_path`` along its whole path (what a replay costs), ``nfe_shared`` the part of it
    shared with the particle it was copied from. The record's ``nfe`` is what it was charged: its own NFEs plus
    its share of what dropped particles cost, so a prompt's records sum to what its search spent."""

    strategy: str
    eta: float = 0.0
    fallback: str | None = None
    particle: str
    parent: str | None = None
    ops: list[dict[str, Any]]
    nfe_path: float
    nfe_shared: float = 0.0


class SearchRecord(BaseModel):
    """One line of ``searches.jsonl``, written when an in-loop search of a prompt is complete (after its
    candidates' records): what the search spent, in all. ``round``: the pass of search.study_nfe_budget it ran
    in (tts.run.study; each pass past the first is a new search, its records in that round), 1 otherwise."""

    schema_version: int = SCHEMA_VERSION
    prompt: str
    prompt_hash: str
    strategy: str
    candidates: int
    round: int = 1
    nfe: float
    nfe_budget: float | None = None
    preview_decodes: int = 0
    preview_scores: int = 0
    usage: Usage | None = None  # API verifiers: what scoring the previews cost
    worker: str = ""


class JudgeRecord(BaseModel):
    """One line of ``judges.jsonl``: a judge (a verifier that does not steer) scoring one saved candidate after the
    search (tts.run.judge; ``tts-judge``). Keyed by the candidate's image (its id in the folder) and the judge's
    label; ``status`` "failed" (``error`` says why) is retried by the next ``tts-judge`` of the folder."""

    schema_version: int = SCHEMA_VERSION
    judge: str  # the label: the verifier config's name (``clip``), or the label given (``{name:clip,label:clip-b}``)
    verifier: str  # the verifier's own name
    config: dict[str, Any] = Field(default_factory=dict)  # the judge's settings (operational keys left out)
    choice_of_metric: str
    higher_is_better: bool = True
    image: str
    prompt: str
    prompt_hash: str
    round: int
    index: int
    status: Literal["ok", "failed"]
    error: str | None = None
    score: float | None = None
    scores: dict[str, MetricScore] = Field(default_factory=dict)
    usage: Usage | None = None
    verify_s: float = 0.0
    worker: str = ""


class CandidateRecord(BaseModel):
    """One line of ``manifest.jsonl``: a generated (and, if status == "ok", verified) candidate; a "blocked"
    one (``error`` says why) was never verified."""

    schema_version: int = SCHEMA_VERSION
    prompt: str
    prompt_index: int
    prompt_hash: str
    prompt_tags: dict[str, Any] = Field(default_factory=dict)
    round: int
    index: int
    seed: int
    noise: dict[str, Any]
    nfe: float
    status: Literal["ok", "failed", "blocked"]  # blocked: the safety checker flagged it or it is black (tts.run.safety)
    error: str | None = None
    verifier: str
    choice_of_metric: str
    score: float | None = None
    scores: dict[str, dict[str, MetricScore]] = Field(default_factory=dict)
    image: str  # a video candidate's: its keyframe strip (first, middle, last frame)
    timings: Timings = Field(default_factory=Timings)
    worker: str = ""
    usage: Usage | None = None
    safety: SafetyRecord | None = None  # flags, rewritten prompt, fallback (absent before tts.run.safety)
    #: video candidates (tts.core.video): the MP4 beside ``image``, its frame count and frame rate (absent for images)
    video: str | None = None
    frames: int | None = None
    fps: float | None = None
    path: PathRecord | None = None  # in-loop strategies: the candidate's whole path (absent for noise searches)
    #: search.pipelines: the label of the pipeline that made it (absent when a search has one pipeline)
    pipeline: str | None = None
    #: judges' scores of this candidate by judge label (judges.jsonl, attached by read_run; never in the manifest)
    judges: dict[str, JudgeRecord] = Field(default_factory=dict, exclude=True)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.prompt_hash, self.round, self.index)


class ScoreSummary(BaseModel):
    explanation: str | None = None
    score: float | None = None


class RoundBest(BaseModel):
    """``<prompt file stem>_i@<round>.json``: the reference project's per-round record plus ours."""

    prompt: str
    search_round: int
    num_noises: int
    best_noise_seed: int | None
    best_score: ScoreSummary
    choice_of_metric: str
    best_img_path: str | None
    # Ours:
    schema_version: int = SCHEMA_VERSION
    best_noise: dict[str, Any] | None = None
    best_scores: dict[str, dict[str, MetricScore]] = Field(default_factory=dict)
    global_best_score: float | None = None
    global_best_img_path: str | None = None
    num_failed: int = 0
    nfe_round: float = 0.0
    nfe_total: float = 0.0
    # search.stop_at (tts.run.rounds): the threshold, the score that ended the search in this round (None: it did
    # not end here), what the prompt's search could spend (nfe_budget, or its share of search.study_nfe_budget) and
    # what it left unspent by stopping
    stop_at: float | None = None
    stopped_at_score: float | None = None
    nfe_budget: float | None = None
    nfe_unspent: float | None = None


class StudyAllocation(BaseModel):
    """One line of ``study.jsonl`` (``search.study_nfe_budget``, tts.run.study): the NFE budgets of one pass over
    the prompts, written before the pass runs and replayed as written by a rerun, so a resumed study spends exactly
    what the uninterrupted one would. ``grants``: each prompt's (by hash) whole budget from this pass on (prompts
    not named keep their earlier grant); ``spent``: what each prompt had spent when the pass was decided;
    ``final``: the allocation is over (no leftover pays for an image, or no prompt can use one)."""

    schema_version: int = SCHEMA_VERSION
    study_nfe_budget: float
    nfe_per_image: float
    step: int
    grants: dict[str, float] = Field(default_factory=dict)
    spent: dict[str, float] = Field(default_factory=dict)
    leftover: float = 0.0
    final: bool = False
