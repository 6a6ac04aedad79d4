"""What a search is: :class:`SearchJob` (every component, validated by tts.app.build before anything loads) and
:class:`PromptRun` (one prompt's search in progress: where it writes, what it reuses, its progress bar)."""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import math
import threading
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..core import runfolder as rf
from ..core.noise import derive_seed
from ..core.validate import is_int
from ..pipelines import PipelineSpec
from ..prompts import Prompt
from ..search.protocols import Budget, make_strategy, traits
from ..verifiers.base import Verifier
from .resume import Resume
from .safety import Safety
from .shard import Shard


@dataclasses.dataclass
class SearchJob:
    """Everything one search run needs, validated (tts.app.build.build_job) before anything heavy happens."""

    pipeline: PipelineSpec
    verifier: Verifier
    search_factory: Callable
    prompts: list[Prompt]
    run_dir: Path
    seed: int = 0
    batch_size: int = 4
    #: verifier batches in flight; None: enough for the verifier's own ``max_concurrency`` at this batch size
    verify_concurrency: int | None = None
    #: prompt tags the summary groups by (None: every tag)
    group_by: tuple[str, ...] | None = None
    #: this process's share of the prompts (tts.run.shard)
    shard: Shard = dataclasses.field(default_factory=Shard)
    #: one manifest per writer and no locks (file systems without cross-host flock)
    per_shard_manifest: bool = False
    #: write tts-collage's strips when the study is complete
    collages: bool = False
    #: blocked candidates: detection, prompt rewriting, fallback pipeline (tts.run.safety)
    safety: Safety = dataclasses.field(default_factory=Safety)
    #: progress bars on the terminal (tts-search: on; tts.search: only when asked)
    progress: bool = True
    per_prompt_total: int | None = None  # candidates a prompt's search makes, when the plan knows it exactly
    #: ``search.nfe_budget`` (None: read from the strategy the factory builds)
    budget: Budget | None = None
    #: ``search.pipelines``: the pipelines one search draws from (tts.pipelines.arms; None: ``pipeline`` alone)
    arms: list | None = None

    def __post_init__(self):
        if self.budget is None:
            self.budget = traits(make_strategy(self.search_factory, self.seed)).budget

    def factory_for(self, grant: float | None) -> Callable:
        """The strategy factory of a prompt whose NFE budget is ``grant`` (its share of search.study_nfe_budget,
        tts.run.study); the job's own factory when None."""
        return self.search_factory if grant is None else functools.partial(self.search_factory, nfe_budget=grant)

    @property
    def verify_workers(self) -> int:
        """Worker threads for verification: the set value, or enough batches in flight for the verifier's
        ``max_concurrency`` requests (API graders split a batch into one request per image)."""
        if self.verify_concurrency is not None:
            return self.verify_concurrency
        limit = getattr(self.verifier, "max_concurrency", None)
        if is_int(limit) and limit > 0:
            return max(2, math.ceil(limit / self.batch_size))
        return 2


class Progress:
    """One bar per prompt counting candidates generated, with how many are verified beside it."""

    def __init__(self, prompt: str, disable: bool, leave: bool, total: int | None = None):
        self.bar = tqdm(desc=prompt[:40], unit="img", total=total, disable=disable, leave=leave, dynamic_ncols=True)
        self.verified = 0
        self._lock = threading.Lock()

    def generated(self, n: int) -> None:
        self.bar.update(n)

    def verified_(self, n: int) -> None:
        with self._lock:
            self.verified += n
            self.bar.set_postfix_str(f"verified {self.verified}", refresh=True)

    def close(self) -> None:
        self.bar.close()


@dataclasses.dataclass
class PromptRun:
    """One prompt's search in progress: where it writes, what it reuses, its bar."""

    job: SearchJob
    folder: rf.RunFolder
    generator: object  # the pipeline's generator (tts.sampling.ImageGenerator); in-loop strategies step it
    screened: object  # the same behind the safety screen (tts.run.safety.Screened): what ask/tell rounds generate
    pool: cf.ThreadPoolExecutor
    index: int
    prompt: Prompt
    resume: Resume
    progress: Progress
    #: this prompt's NFE budget under search.study_nfe_budget (tts.run.study), in place of search.nfe_budget
    grant: float | None = None
    #: the study pass an in-loop (or gradient) search runs in under search.study_nfe_budget: its records' round;
    #: past the first, a new search whose seeds derive from the pass too (tts.run.study)
    round: int = 1

    @property
    def nfe_budget(self) -> float | None:
        """What this prompt's search may spend: its grant under search.study_nfe_budget, else search.nfe_budget."""
        return self.job.budget.nfe if self.grant is None else self.grant

    @property
    def seed(self) -> int:
        """The seed the prompt's strategy derives its noises from: the run's, or (a study's later passes) the
        run's and the pass's."""
        return self.job.seed if self.round == 1 else derive_seed(self.job.seed, "study pass", self.round)

    def strategy(self, context):
        """The prompt's strategy, as every driver builds it: its budget (or grant), its seed, its context."""
        return make_strategy(self.job.factory_for(self.grant), self.seed, self.phash, context)

    def searched(self) -> bool:
        """Whether ``searches.jsonl`` says this prompt's in-loop (or gradient) search of this pass is complete
        (its bar then counts its candidates)."""
        done = rf.read_searches(self.folder.root).get(rf.search_key(self.phash, self.round))
        if done is not None:
            self.progress.generated(done.candidates)
            return True
        return False

    @property
    def phash(self) -> str:
        return rf.prompt_hash(self.prompt.text)
