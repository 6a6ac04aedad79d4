"""The Python API: search from a notebook or a script, with the same components, seeds and run folders as
``tts-search``.

    import tts
    pipe = tts.load_pipeline("shapes")                 # a preset (configs/pipeline/*.yaml) or a diffusers pipeline
    result = tts.search(pipe, "a red circle left of a blue square", verifier="shapes", strategy="smc",
                        nfe_budget=160, seed=0)
    result.best.image, result.best.score, result.candidates, result.nfe
    run = tts.load_run("outputs/...")                 # records and summary of any run folder

Settings are composed from the shipped YAMLs (tts.core.configtree) exactly as the command line composes them, the
job is validated before anything loads, and the search runs through :func:`tts.run.runjob.run_job`, the function
``tts-search`` calls: ``run_dir=`` gets the same resumable run folder (config.json, plan.json, manifest, round
JSONs, summary); without it the search runs in a temporary folder that is removed before ``search`` returns
(images held in memory). Nothing global changes: no working-directory change, no logging handler, no Hydra
initialisation; progress bars only with ``progress=True``.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from .core import configtree
from .core import runfolder as rf
from .pipelines import PipelineSpec
from .pipelines.checks import Source
from .core.records import CandidateRecord, MetricScore
from .verifiers.base import Verifier

__all__ = ["Pipeline", "Run", "ScoredImage", "SearchResult", "load_pipeline", "load_run", "search"]


# -- pipelines -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Pipeline:
    """A loaded pipeline ready to search: its settings (``spec``, a tts.pipelines.PipelineSpec) and the pipeline
    object (``pipe``). Keep it and pass it to every :func:`search`: it is loaded once."""

    spec: Any
    #: the settings as a run folder's config.json records them (the preset's YAML with the overrides)
    config: dict

    @property
    def pipe(self):
        return self.spec.held.pipe

    @property
    def name(self) -> str:
        return self.spec.name


def load_pipeline(pipeline, **settings) -> Pipeline:
    """A pipeline preset by name (``"shapes"``, ``"flux-dev"``: configs/pipeline/NAME.yaml; ``settings`` override its
    keys, e.g. ``num_inference_steps=20``), or a diffusers pipeline object of a supported family (its own
    defaults for ``height``, ``width``, ``num_inference_steps`` and ``guidance_scale`` unless given). Loads the
    model now; a bad name or setting is a one-line ValueError."""
    if isinstance(pipeline, Pipeline):
        if settings:
            raise ValueError("this pipeline is loaded: give its settings to load_pipeline with the preset name (or "
                             "the diffusers pipeline object)")
        return pipeline
    if isinstance(pipeline, str):
        node = configtree.option("pipeline", pipeline) | settings
        spec = PipelineSpec(**_fields(node))
        loaded = spec.load()
        return Pipeline(_held(spec, loaded, spec.load_key, adopted=False), node)
    return _adopt(pipeline, settings)


def _fields(node: dict) -> dict:
    return {k: v for k, v in node.items() if k != "_target_"}


def _held(spec, loaded, key: tuple, adopted: bool):
    """``spec`` as a _HeldSpec: the model manager gets ``loaded`` from it instead of loading the model again."""
    held = _HeldSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)})
    held.held, held.key, held.adopted = loaded, key, adopted
    return held


def _adopt(pipe, settings: dict) -> Pipeline:
    """A diffusers pipeline object the caller built: its family from its class, its call defaults from its
    ``__call__``; its own memory settings (offload, tiling) are left as the caller made them."""
    from .pipelines import LoadedPipeline, family_for

    if not hasattr(pipe, "__call__") or not hasattr(pipe, "components"):
        raise ValueError(f"load_pipeline takes a preset name or a diffusers pipeline, got {type(pipe).__name__}")
    family = family_for(type(pipe).__name__)
    node = {"_target_": "tts.pipelines.PipelineSpec", **_call_defaults(pipe), **settings}
    spec = PipelineSpec(**_fields(node))
    pipe.set_progress_bar_config(disable=True)
    loaded = LoadedPipeline(pipe, family, pipe._execution_device)
    return Pipeline(_held(spec, loaded, ("tts.api", id(pipe)), adopted=True), node)


def _call_defaults(pipe) -> dict:
    """Settings of an adopted pipeline that the caller did not give: from the pipeline's config and the
    defaults of its ``__call__`` (height and width: its default sample size times the VAE's scale factor)."""
    import torch

    params = inspect.signature(type(pipe).__call__).parameters
    size = getattr(pipe, "default_sample_size", None)
    side = int(size * getattr(pipe, "vae_scale_factor", 8)) if isinstance(size, int) else 1024
    dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(getattr(pipe, "dtype", None), "fp32")
    steps = params.get("num_inference_steps")
    guidance = params.get("guidance_scale")
    return {"name": type(pipe).__name__, "model_id": str(pipe.config.get("_name_or_path") or type(pipe).__name__),
            "height": side, "width": side, "dtype": dtype, "device": str(pipe._execution_device),
            "num_inference_steps": steps.default if steps is not None and isinstance(steps.default, int) else 30,
            "guidance_scale": float(guidance.default) if guidance is not None and isinstance(
                guidance.default, (int, float)) else 1.0}


class _HeldSpec(PipelineSpec):
    """A PipelineSpec whose pipeline is already loaded (tts.load_pipeline): the model manager takes it from here
    (``_load``) instead of loading the checkpoint again, even after it unloaded it."""

    held = None
    key: tuple = ()
    adopted = False

    @property
    def load_key(self) -> tuple:
        return self.key

    def check(self):
        if not self.adopted:
            return super().check()
        return Source(path=self.model_id, index={"_class_name": type(self.held.pipe).__name__}, local_files_only=True)

    def _load(self, source):
        return self.held

    def _apply_memory_options(self, pipe) -> None:
        if not self.adopted:  # an adopted pipeline keeps the memory settings its owner chose
            super()._apply_memory_options(pipe)


# -- verifiers -------------------------------------------------------------------------------------------------

class CallableVerifier(Verifier):
    """A plain function ``(prompts, images) -> list[float]`` as a verifier: one metric, ``score``, larger better
    (``lower_is_better=True``: smaller better)."""

    metrics = ("score",)
    operational_keys = ()

    def __init__(self, fn: Callable, lower_is_better: bool = False):
        self.fn = fn
        self.name = getattr(fn, "__name__", "callable").strip("<>") or "callable"
        self.lower_is_better = frozenset({"score"}) if lower_is_better else frozenset()
        super().__init__("score")

    def score(self, prompts, images):
        values = list(self.fn(list(prompts), list(images)))
        return [{"score": MetricScore(score=float(v))} for v in values]


def _verifier(verifier, options: dict) -> tuple[Verifier, dict]:
    """The verifier and its config node: a name (configs/verifier/NAME.yaml with ``options``), a Verifier, or a
    callable."""
    if isinstance(verifier, str):
        node = configtree.option("verifier", verifier)
        _check_keys("verifier", verifier, node, options)
        node |= options
        return _instantiate(node, f"verifier {verifier!r}"), node
    if options and not callable(verifier):
        raise ValueError("verifier_options apply to a verifier given by name")
    if isinstance(verifier, Verifier):
        cls = type(verifier)
        return verifier, {"_target_": f"{cls.__module__}.{cls.__qualname__}", "name": verifier.name,
                          "choice_of_metric": verifier.choice_of_metric}
    if callable(verifier):
        unknown = sorted(set(options) - {"lower_is_better"})
        if unknown:
            raise ValueError(f"a callable verifier takes only lower_is_better, not {unknown[0]!r}")
        wrapped = CallableVerifier(verifier, **options)
        return wrapped, {"_target_": "tts.api.CallableVerifier", "choice_of_metric": "score",
                         "fn": f"{getattr(verifier, '__module__', '')}.{getattr(verifier, '__qualname__', wrapped.name)}",
                         **options}
    raise ValueError(f"verifier must be a name ({', '.join(configtree.choices('verifier'))}), a tts Verifier or a "
                     f"function (prompts, images) -> list[float]; got {type(verifier).__name__}")


# -- strategies ------------------------------------------------------------------------------------------------

def _no_pipelines(node: dict) -> None:
    """The search-over-pipelines keys of a search YAML (tts.app.over_models) taken out of the strategy's node;
    the Python API searches one pipeline (tts-search does several: docs/search-over-models.md)."""
    from .app.over_models import KEYS

    over = {k: node.pop(k) for k in KEYS if k in node}
    if over.get("pipelines") is not None or over.get("allocation", "uniform") != "uniform":
        raise ValueError("pipelines= / allocation= (a search over several pipelines) are tts-search settings for "
                         "now: tts-search search.pipelines=[...] (docs/search-over-models.md)")


def _strategy(strategy, options: dict) -> tuple[Callable, dict]:
    """The strategy factory and its config node: a name (configs/search/NAME.yaml with ``options``), or a
    strategy class (or ``functools.partial`` of one), built once per prompt with that prompt's seeds."""
    if isinstance(strategy, str):
        frontend = options.pop("frontend", None)
        node = configtree.option("search", strategy, {"frontend": frontend} if isinstance(frontend, str) else None)
        if frontend is not None and not isinstance(frontend, str):
            options["frontend"] = frontend
        _check_keys("search", strategy, node, options)
        node |= options
        _no_pipelines(node)
        return _instantiate(node, f"strategy {strategy!r}"), node
    if isinstance(strategy, type) or isinstance(strategy, functools.partial):
        func = strategy.func if isinstance(strategy, functools.partial) else strategy
        given = dict(strategy.keywords) if isinstance(strategy, functools.partial) else {}
        factory = functools.partial(func, **(given | options))
        return factory, {"_target_": f"{func.__module__}.{func.__qualname__}", "_partial_": True, **given, **options}
    from .search.protocols import AskTellStrategy, is_in_loop

    if isinstance(strategy, AskTellStrategy) or is_in_loop(strategy):
        raise ValueError(f"pass the strategy's class (or functools.partial of it), not a built {type(strategy).__name__}: "
                         "tts builds one per prompt with that prompt's seeds")
    raise ValueError(f"strategy must be a name ({', '.join(configtree.choices('search'))}) or a strategy class; got "
                     f"{type(strategy).__name__}")


def _node_keys(node: dict) -> set[str]:
    """The options a group option takes: its YAML's keys and its class's keywords."""
    from .core.runfolder import target_class

    return {str(k) for k in node if not str(k).startswith("_")} | _keywords(target_class(node.get("_target_")))


def _option_keys(group: str, component) -> set[str]:
    """The keyword options a strategy or verifier given to search() takes (empty for a built verifier)."""
    if isinstance(component, str):
        return _node_keys(configtree.option(group, component))
    if group == "search" and isinstance(component, (type, functools.partial)):
        return _keywords(component.func if isinstance(component, functools.partial) else component)
    if group == "verifier" and callable(component) and not isinstance(component, Verifier):
        return {"lower_is_better"}
    return set()


def _route(options: dict, strategy, verifier) -> tuple[dict, dict]:
    """search()'s keyword options split between the strategy (``rounds=2``) and the verifier
    (``choice_of_metric="correct"``); a key both take, or neither, is a one-line error."""
    s_keys, v_keys = _option_keys("search", strategy), _option_keys("verifier", verifier)
    to_strategy, to_verifier = {}, {}
    for key, value in options.items():
        if key in s_keys and key in v_keys:
            raise ValueError(f"{key!r} is an option of both the strategy and the verifier: pass it in "
                             "strategy_options={...} or verifier_options={...}")
        if key not in s_keys | v_keys:
            raise ValueError(f"unknown option {key!r}{configtree.suggest(key, s_keys | v_keys)} (strategy options: "
                             f"{', '.join(sorted(s_keys)) or 'none'}; verifier options: "
                             f"{', '.join(sorted(v_keys)) or 'none'})")
        (to_strategy if key in s_keys else to_verifier)[key] = value
    return to_strategy, to_verifier


def _check_keys(group: str, name: str, node: dict, options: dict) -> None:
    """An option the YAML does not list and its class does not take: one line with the closest key."""
    keys = _node_keys(node)
    for key in options:
        if key not in keys:
            raise ValueError(f"unknown option {key!r} for {group} {name!r}{configtree.suggest(key, keys)} "
                             f"(options: {', '.join(sorted(keys))})")


def _keywords(cls) -> set[str]:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return set()
    return {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)} - {"seed_fn", "context"}


def _instantiate(node: dict, what: str):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ValueError):
            raise ValueError(str(cause).splitlines()[0]) from None
        raise ValueError(f"cannot build {what}: {str(cause).splitlines()[0]}") from None


# -- results ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ScoredImage:
    """One candidate: its image, its score on the searched metric (None when verification failed) and its
    record (every metric, seed, noise lineage, NFEs; tts.core.records.CandidateRecord)."""

    record: CandidateRecord
    path: Path | None = None
    _image: Any = dataclasses.field(default=None, repr=False)

    @property
    def image(self):
        """The image (PIL), read from the run folder on first use when the search kept one."""
        if self._image is None and self.path is not None:
            from PIL import Image

            with Image.open(self.path) as im:
                self._image = im.convert("RGB")
        return self._image

    @property
    def score(self) -> float | None:
        return self.record.score

    @property
    def scores(self) -> dict[str, dict[str, MetricScore]]:
        return self.record.scores

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def round(self) -> int:
        return self.record.round

    @property
    def status(self) -> str:
        return self.record.status


@dataclasses.dataclass
class SearchResult:
    """One prompt's search: every candidate (round, index order), the best in the metric's direction, the NFEs
    it spent, and the run folder (None when none was kept)."""

    prompt: str
    candidates: list[ScoredImage]
    best: ScoredImage | None
    nfe: float
    run_dir: Path | None = None


def _results(run_dir: Path, prompts: list[str], higher_is_better: bool, keep: bool) -> list[SearchResult]:
    from .search import best_record

    records = rf.final_records(rf.read_manifest(run_dir))
    out = []
    for text in prompts:
        mine = sorted((r for r in records if r.prompt == text), key=lambda r: (r.round, r.index))
        cands = [ScoredImage(r, run_dir / r.image) for r in mine]
        if not keep:  # the folder goes: read the images now
            for c in cands:
                c._image, c.path = c.image if c.status != "failed" or (run_dir / c.record.image).exists() else None, None
        top = best_record(mine, higher_is_better)
        best = next((c for c in cands if c.record is top), None)
        out.append(SearchResult(text, cands, best, sum(r.nfe for r in mine), run_dir if keep else None))
    return out


# -- search ----------------------------------------------------------------------------------------------------

def search(pipeline, prompt: str | Sequence[str], *, verifier="shapes", strategy="random",
           nfe_budget: float | None = None, stop_at: float | None = None, study_nfe_budget: float | None = None,
           study_order: str | None = None, seed: int = 0, batch_size: int = 8, run_dir: str | Path | None = None,
           progress: bool = False, verifier_options: dict | None = None, strategy_options: dict | None = None,
           **options) -> SearchResult | list[SearchResult]:
    """Search one prompt (a SearchResult) or several (a list of them, in order).

    ``pipeline``: a :class:`Pipeline` (tts.load_pipeline), a preset name or a diffusers pipeline.
    ``verifier``: a name (configs/verifier/NAME.yaml; ``verifier_options`` such as ``choice_of_metric``), a
    tts Verifier, or a function ``(prompts, images) -> list[float]`` (larger is better).
    ``strategy``: a name (configs/search/NAME.yaml) or a strategy class; ``strategy_options``.
    Other keywords are the strategy's or the verifier's options, whichever takes them (``rounds=2``,
    ``choice_of_metric="correct"``). ``nfe_budget``: denoiser evaluations per prompt. ``stop_at``: a prompt's
    search ends at its first candidate scoring at least this (in the metric's direction; docs/stopping.md);
    ``study_nfe_budget``: one budget for all the prompts, what easy ones leave going to hard ones (``study_order``:
    ``"round-robin"``, or ``"best-first"``: the prompts closest to the threshold first).
    ``run_dir``: write (or resume) the run folder there, as tts-search does; None keeps nothing on disk.
    """
    from .run.loop import SearchJob
    from .pipelines.models import manager
    from .app.plan import make_plan
    from .prompts import ListPrompts, select
    from .run.safety import from_config as safety_from_config

    settings = configtree.root()
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("prompt must be a non-empty string or a list of them")
    to_strategy, to_verifier = _route(options, strategy, verifier)
    ver, ver_node = _verifier(verifier, dict(verifier_options or {}) | to_verifier)
    opts = dict(strategy_options or {}) | to_strategy
    if nfe_budget is not None:
        opts["nfe_budget"] = nfe_budget
    factory, search_node = _strategy(strategy, opts)
    _check_run_settings(seed, batch_size)
    pipe = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    budget = _check_components(ver, factory, pipe.spec)
    budget = _driver_settings(budget, factory, search_node, stop_at, study_nfe_budget, study_order)
    prompts_node = ({"_target_": "tts.prompts.SinglePrompt", "text": texts[0]} if isinstance(prompt, str)
                    else {"_target_": "tts.prompts.ListPrompts", "texts": texts})
    prompts = select(ListPrompts(texts), "all")
    for p in prompts:
        ver.check_prompt(p.text)
    config = settings["settings"] | {"pipeline": pipe.config, "verifier": ver_node, "search": search_node,
                                     "prompts": prompts_node, "prompt": texts[0], "seed": seed,
                                     "batch_size": batch_size}
    keep = run_dir is not None
    folder = Path(run_dir) if keep else Path(tempfile.mkdtemp(prefix="tts-search-"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        job = SearchJob(pipeline=pipe.spec, verifier=ver, search_factory=factory, prompts=prompts, run_dir=folder,
                        seed=seed, batch_size=batch_size, safety=safety_from_config(settings["settings"].get("safety"),
                                                                                    pipe.spec), progress=progress,
                        budget=budget)
        from .run.runjob import run_job

        try:
            run_job(job, _plain(config), make_plan(_omega(config), job))
        except rf.RunFolderError as e:  # a folder of another search, or one tts cannot use: one line
            raise ValueError(str(e).replace("(drop hydra.run.dir)", "(another run_dir)")) from None
        results = _results(folder, [p.text for p in prompts], ver.higher_is_better(), keep)
    finally:
        if pipe.spec.adopted:  # the process's model manager keeps no reference to the caller's pipeline
            manager().unload(pipe.spec.load_key)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return results[0] if isinstance(prompt, str) else results


def _check_run_settings(seed, batch_size) -> None:
    from .core.validate import is_int

    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_components(verifier: Verifier, factory, spec) -> None:
    """What tts-search checks before loading anything: the verifier can run here, the factory builds a strategy,
    and a budget pays for at least one image. Returns the strategy's budget."""
    from .pipelines.nfe import nfe_per_image
    from .search.protocols import kind_problem, make_strategy, traits

    try:
        verifier.check()
    except ImportError as e:
        raise ValueError(str(e)) from None
    try:
        strategy = make_strategy(factory)
    except TypeError as e:
        raise ValueError(f"cannot build the strategy: {e}") from None
    if kind_problem(strategy):
        raise ValueError(f"strategy {type(strategy).__name__} has no ask()/tell() (or in_loop and search(engine)); "
                         "see tts/search")
    if traits(strategy).gradient:  # search=noise-opt: refused before anything loads, as tts-search does
        from .run.noiseopt import verifier_problem

        if problem := verifier_problem(verifier):
            raise ValueError(problem)
    budget = traits(strategy).budget
    if budget.limited:
        problem = budget.shortfall(*nfe_per_image(spec), spec.name, key="nfe_budget")
        if problem:
            raise ValueError(problem)
    return budget


def _driver_settings(budget, factory, search_node: dict, stop_at, study_nfe_budget, study_order=None):
    """``stop_at`` and ``study_nfe_budget`` checked (one line) and kept in the config under ``search``, as
    tts-search writes them; the job's budget with them."""
    from .search.protocols import driver_problem, make_strategy, traits

    try:
        budget = budget.with_settings(stop_at, study_nfe_budget, study_order)
    except ValueError as e:
        raise ValueError(str(e).replace("search.", "")) from None
    problem = driver_problem(traits(make_strategy(factory)), budget)
    if problem:
        raise ValueError(problem.replace("search.", ""))
    for key, value in (("stop_at", budget.stop_at), ("study_nfe_budget", budget.study), ("study_order", study_order)):
        if value is not None:
            search_node[key] = value
    return budget


def _plain(config: dict) -> dict:
    """The config as JSON would hold it (objects named, not embedded)."""
    return json.loads(json.dumps(config, default=str))


def _omega(config: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(_plain(config))


# -- reading run folders ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run(rf.RunData):
    """A run folder read back (tts.core.runfolder.read_run): its final records (one per candidate), every record
    written (retries too), config.json, summary.json and plan.json (empty when absent), the in-loop searches
    (searches.jsonl) and preview scores (previews.jsonl), and where the records came from (``source``)."""

    def best(self) -> dict[str, CandidateRecord]:
        """Each prompt's best candidate in the metric's direction (the one summary.json names)."""
        from .search import best_record

        return {p: b for p, rs in self.prompts().items() if (b := best_record(rs, self.higher_is_better))}

    def image(self, record: CandidateRecord):
        """A candidate's image (PIL)."""
        from PIL import Image

        with Image.open(self.path / record.image) as im:
            return im.convert("RGB")


def load_run(path: str | Path) -> Run:
    """Any run folder (tts-search's or tts.search's with run_dir; a tt-scale-flux folder of round JSONs) as
    typed records with its config and summary. A folder that is not a run is a one-line ValueError."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"no run folder at {path}")
    if not rf.is_run(path):
        raise ValueError(f"{path} is not a run folder (no {rf.MANIFEST} and no round JSONs): pass the folder "
                         "tts-search printed as 'run folder: ...'")
    return Run(**rf.read_run(path).fields())
