"""Step-level sampling: the denoising loop of every pipeline family, one step at a time, exposing x0.

A :class:`Sampler` drives a loaded pipeline's denoiser and a copy of its scheduler the way k-diffusion's
samplers do (Karras et al. 2022, arXiv 2206.00364; github.com/crowsonkb/k-diffusion): a plain loop over
steps, each returning the next latents *and* the model's prediction of the clean sample x0, so a search can
score previews of x0 between steps, drop, duplicate and re-order trajectories, and re-noise them. What differs
between families lives in the family module (tts.pipelines.<family>: ``prepare``, ``predict``, ``decode``);
what is the same for all lives here (``step``, ``renoise``, NFE counting, :class:`Trajectories`).

* **Deterministic (default).** Each step is the pipeline's own scheduler step, so with no search acting the
  images equal the pipeline call's (tests/test_sampler.py holds every family's tiny twin to that).
* **Batch changes.** :meth:`Trajectories.select` keeps, duplicates and re-orders rows; latents, x0, every
  per-row conditioning tensor and the NFE counts follow. A multistep scheduler (PNDM, DPM-Solver++, UniPC,
  ...) keeps a history of model outputs that cannot follow, so a sampler made with ``batch_changes=True`` on
  one falls back to a first-order solver of the same noise schedule (DDIM, Song et al. 2021, for the
  SD-like families; Euler for flow matching), logs a warning and sets ``Sampler.fallback``.
* **Stochastic sampling** (``eta > 0``): the generalised DDIM step of Song et al. 2021 (arXiv 2010.02502,
  Eq. 12) on the family's interpolant x_t = alpha_t x0 + sigma_t eps. From step t to the next, less noisy
  s: x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, with c = eta * sigma_{t|s} sigma_s / sigma_t and
  sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2. Every eta keeps the marginals
  q(x_t | x0) = N(alpha_t x0, sigma_t^2) of the deterministic sampler (eta = 0 is DDIM, eta = 1 the DDPM
  posterior, Ho et al. 2020). For the SD-like families alpha_t^2 = alphabar_t (variance preserving); for the
  flow-matching families (Flux, SD3) alpha_t = 1 - t, sigma_t = t (rectified flow): a discretised SDE with
  the flow ODE's marginals, the stochastic sampler particle methods on flow models need (SDEs of an
  interpolant: Ma et al. 2024, SiT, arXiv 2401.08740; the flow-to-VP-SDE conversion of Kim et al. 2025, RBF,
  arXiv 2503.19385); diffusers' ``stochastic_sampling`` option instead drops the noise estimate and draws
  all of sigma_s afresh each step (x_s = alpha_s x0 + sigma_s z), with no eta between that and the ODE.
  The noise z of each row comes from a seed the caller gives (``seeds=``, e.g. tts.core.noise.derive_seed of the
  row's lineage and the step), never from a global RNG, so a trajectory replays exactly from (initial-noise
  lineage, per-step seeds).
* ``renoise`` runs the forward process from step i back to an earlier step j (path search, Ma et al. 2025,
  arXiv 2501.09732, Sec. 3.2): x_j = (alpha_j / alpha_i) x_i + sqrt(sigma_j^2 - (alpha_j / alpha_i)^2 sigma_i^2) z.
* **NFEs per row**: a forward pre-hook on the denoiser counts the rows it evaluates (classifier-free guidance
  doubles them). ``Trajectories.nfe`` is each row's whole path, ``shared`` the part of it a copy made by
  ``select`` shares with the row it was copied from (counted for that row), so ``nfe - shared`` summed over the
  rows plus what dropped rows cost is ``spent``, what the batch really cost.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .generate import DenoiserRows, videos
from ..core.noise import fresh, make_noise, step_noise_generators, step_noise_seed
from ..pipelines import PipelineConfigError, is_video
from ..pipelines.stepping import Conditioning

if TYPE_CHECKING:
    from .generate import Embeds, Generator

log = logging.getLogger(__name__)
#: schedulers whose step depends only on (model output, step index, sample): rows may change between steps
FIRST_ORDER = frozenset({"DDIMScheduler", "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler", "SCMScheduler"})
SeedFn = Callable[[int], Sequence[int]]  # step index -> one seed per row


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """``eta``: 0 deterministic (the pipeline's own steps), up to 1 (DDPM-like) stochastic; ``batch_changes``: the
    caller will select / renoise rows between steps (multistep schedulers then fall back to first order)."""

    eta: float = 0.0
    batch_changes: bool = False

    def __post_init__(self):
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"sampler eta must be a number in [0, 1] (0: deterministic), got {self.eta!r}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The interpolant x_i = alpha_i x0 + sigma_i eps at positions 0..n (n: after the last step), float64 on
    the CPU; the solver's state is ``scale_i`` times it (Euler's variance-exploding state: 1 / alpha_i)."""

    alpha: torch.Tensor
    sigma: torch.Tensor
    scale: torch.Tensor
    prediction: str  # epsilon | v_prediction | sample | flow
    clip: float | None  # DDIM's clip_sample range for x0

    def x0_eps(self, state: torch.Tensor, out: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = float(self.alpha[i]), float(self.sigma[i])
        x = state / float(self.scale[i])
        if self.prediction == "epsilon":
            eps = out
            x0 = (x - s * eps) / a
        elif self.prediction == "v_prediction":
            x0, eps = a * x - s * out, s * x + a * out
        elif self.prediction == "flow":
            x0, eps = x - s * out, x + a * out
        else:  # sample
            x0, eps = out, (x - a * out) / s
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        return x0, eps

    def step(self, state: torch.Tensor, out: torch.Tensor, i: int, eta: float,
             z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(state at i + 1, x0): the generalised DDIM step (module docstring); ``z`` the noise when eta > 0."""
        x0, eps = self.x0_eps(state, out, i)
        a_t, s_t = float(self.alpha[i]), float(self.sigma[i])
        a_s, s_s = float(self.alpha[i + 1]), float(self.sigma[i + 1])
        c = eta * math.sqrt(max(s_t ** 2 - (a_t / a_s * s_s) ** 2, 0.0)) * s_s / s_t if s_t > 0 and eta > 0 else 0.0
        x = a_s * x0 + math.sqrt(max(s_s ** 2 - c ** 2, 0.0)) * eps
        if c > 0:
            x = x + c * z
        return (x * float(self.scale[i + 1])).to(state.dtype), x0

    def renoise(self, state: torch.Tensor, i: int, j: int, z: torch.Tensor) -> torch.Tensor:
        """The state at the earlier position j < i: the forward transition q(x_j | x_i) with noise ``z``."""
        ratio = float(self.alpha[j] / self.alpha[i])
        std = math.sqrt(max(float(self.sigma[j]) ** 2 - (ratio * float(self.sigma[i])) ** 2, 0.0))
        return ((ratio * state / float(self.scale[i]) + std * z) * float(self.scale[j])).to(state.dtype)


@dataclasses.dataclass
class Trajectories:
    """A batch of trajectories at one step: ``latents`` (the solver's state, the pipeline's layout: packed for
    Flux), ``x0`` (the last x0 prediction, None before the first step and after a renoise), ``nfe`` (denoiser
    evaluations along each row's path), ``shared`` (the part of ``nfe`` shared with the row a copy was made
    from), ``spent`` (evaluations this batch cost, shared prefixes once)."""

    latents: torch.Tensor
    cond: Conditioning
    step: int
    nfe: torch.Tensor
    x0: torch.Tensor | None = None
    spent: float = 0.0
    shared: torch.Tensor | None = None
    movable: bool = True  # False on a multistep scheduler's own steps (its history cannot follow)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def select(self, rows: Sequence[int], copies: bool = False) -> Trajectories:
        """These rows, in this order (drop, duplicate, re-order); every per-row tensor follows. ``copies``: the
        rows are copies of rows kept elsewhere (e.g. finals kept as candidates), so each shares its whole path."""
        if not self.movable:
            raise PipelineConfigError("this sampler steps a multistep scheduler whose history cannot follow "
                                      "selected rows: make it with SamplerOptions(batch_changes=True)")
        index = torch.as_tensor(list(rows), dtype=torch.long)
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= len(self):
            raise IndexError(f"select takes 1 or more row indices in [0, {len(self)}), got {list(rows)}")
        on = index.to(self.latents.device)
        shared = self.own_shared()[index].clone()
        seen: set[int] = set()
        for k, row in enumerate(index.tolist()):  # a second copy shares its whole path so far with the first
            if row in seen or copies:
                shared[k] = self.nfe[row]
            seen.add(row)
        return dataclasses.replace(self, latents=self.latents[on], cond=self.cond.select(index), nfe=self.nfe[index],
                                   x0=None if self.x0 is None else self.x0[on], shared=shared)

    def own_shared(self) -> torch.Tensor:
        return torch.zeros_like(self.nfe) if self.shared is None else self.shared


class Sampler:
    """Steps one loaded pipeline (through its Generator: embeddings cache, noises from lineages)."""

    def __init__(self, generator: Generator, options: SamplerOptions = SamplerOptions()):
        self.gen, self.options = generator, options
        self.pipe, self.family, self.spec = generator.pipe, generator.family, generator.spec
        _check_family(self.family, self.spec, options)
        self.scheduler, self.fallback = _solver(self.pipe.scheduler, options)
        self.schedule: Schedule | None = None
        self.counter = DenoiserRows(getattr(self.pipe, self.family.DENOISER))

    def close(self) -> None:
        self.counter.close()

    @property
    def num_steps(self) -> int:
        return len(self.scheduler.timesteps) - getattr(self.family, "TRAILING_TIMESTEPS", 0)

    @torch.no_grad()
    def start(self, prompt: str | Embeds | list, lineages: list[dict]) -> Trajectories:
        """Trajectories at step 0 from initial-noise lineages (tts.core.noise), one prompt or one per row."""
        gen, spec = self.gen, self.spec
        noise = self.family.to_pipeline_latents(self.pipe, gen.noise(lineages), spec.height, spec.width)
        # the compute dtype, as the pipeline call gets it; a family whose pipeline keeps float32 latents says so
        latents = noise.to(device=self.pipe._execution_device, dtype=_dtype(spec.dtype))
        latents = latents.to(_dtype(getattr(self.family, "STATE_DTYPE", spec.dtype)))
        cond = self.family.prepare(self.pipe, self.scheduler, spec, gen.row_embeds(prompt, len(lineages)), latents)
        self.schedule = _schedule(self.scheduler)
        movable = type(self.scheduler).__name__ in FIRST_ORDER
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        if getattr(self.family, "STEP_NOISE", False):  # the scheduler's own noises: one seed per row, follows rows
            cond.rows["step_seed"] = torch.tensor([step_noise_seed(lin) for lin in lineages], dtype=torch.long)
        return Trajectories(latents, cond, 0, torch.zeros(len(lineages), dtype=torch.float64), movable=movable)

    @torch.no_grad()
    def predict(self, traj: Trajectories) -> tuple[torch.Tensor, int]:
        """One guided denoiser evaluation of every row at the current step: (the model output, the rows the
        denoiser evaluated, counted by a forward hook: classifier-free guidance doubles them)."""
        if traj.step >= self.num_steps:
            raise IndexError(f"the trajectories are done ({self.num_steps} steps)")
        t = self.scheduler.timesteps[traj.step]
        self._at(traj.step)
        model_input = (self.scheduler.scale_model_input(traj.latents, t)
                       if hasattr(self.scheduler, "scale_model_input") else traj.latents)
        self.counter.rows = 0
        out = self.family.predict(self.pipe, traj.cond, model_input, t)
        return out, self.counter.rows

    @torch.no_grad()
    def step(self, traj: Trajectories, seeds: Sequence[int] | None = None) -> Trajectories:
        """The trajectories one step on, with this step's x0 prediction; ``seeds`` (one per row) when eta > 0."""
        out, rows = self.predict(traj)
        i = traj.step
        if self.options.eta > 0:
            z = self._noise(_need_seeds(seeds, len(traj), "step"), traj.latents)
            latents, x0 = self._require_schedule("stochastic sampling").step(traj.latents, out, i, self.options.eta, z)
        else:
            self._at(i)
            result = self.scheduler.step(out, self.scheduler.timesteps[i], traj.latents, return_dict=True,
                                         **self._step_noise(traj))
            latents = result.prev_sample
            x0 = getattr(result, "pred_original_sample", None)
            if x0 is None and self.schedule is not None:
                x0 = self.schedule.x0_eps(traj.latents, out, i)[0]
        return dataclasses.replace(traj, latents=latents, x0=x0, step=i + 1, nfe=traj.nfe + rows / len(traj),
                                   spent=traj.spent + rows)

    def run(self, traj: Trajectories, until: int | None = None, seeds: SeedFn | None = None,
            on_step: Callable[[Trajectories], None] | None = None) -> Trajectories:
        """Step until step ``until`` (default: the end); ``seeds(i)`` gives step i's per-row seeds when eta > 0."""
        until = self.num_steps if until is None else until
        while traj.step < until:
            traj = self.step(traj, seeds(traj.step) if seeds is not None else None)
            if on_step is not None:
                on_step(traj)
        return traj

    @torch.no_grad()
    def renoise(self, traj: Trajectories, to_step: int, seeds: Sequence[int]) -> Trajectories:
        """The forward process from the current step back to ``to_step`` (earlier, noisier), with seeded noise."""
        sched, i = self._require_schedule("renoise"), traj.step
        if not 0 <= to_step < i:
            raise ValueError(f"renoise goes back to an earlier step: 0 <= to_step < {i}, got {to_step}")
        z = self._noise(_need_seeds(seeds, len(traj), "renoise"), traj.latents)
        return dataclasses.replace(traj, latents=sched.renoise(traj.latents, i, to_step, z), x0=None, step=to_step)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list:
        """PIL images of latents (final latents, or x0 previews)."""
        out = self.family.decode(self.pipe, latents, self.spec.height, self.spec.width)
        return videos(self.family, self.spec, out) if is_video(self.family) else out

    def generate(self, prompt, lineages: list[dict], seeds: SeedFn | None = None) -> tuple[list, Trajectories]:
        """Images of a whole run (no search acting) and the finished trajectories."""
        traj = self.run(self.start(prompt, lineages), seeds=seeds)
        return self.decode(traj.latents), traj

    def _at(self, i: int) -> None:
        """Schedulers that count their own steps (Euler, flow matching) are told which step this is."""
        if hasattr(self.scheduler, "_step_index") and type(self.scheduler).__name__ in FIRST_ORDER:
            self.scheduler._step_index = i

    def _step_noise(self, traj: Trajectories) -> dict:
        """The per-row generators a scheduler that draws its own noise takes at this step (as in the pipeline
        call, tts.sampling.generate): each row's, past the draws of its earlier steps."""
        seeds = traj.cond.rows.get("step_seed")
        if seeds is None:
            return {}
        return {"generator": step_noise_generators(seeds.tolist(), traj.step, (1, *traj.latents.shape[1:]))}

    def _require_schedule(self, what: str) -> Schedule:
        if getattr(self.family, "STEP_NOISE", False):
            raise PipelineConfigError(f"{what} is not supported on {type(self.scheduler).__name__}, whose steps draw "
                                      "fresh noise themselves: use a search that needs neither (eta=0, no renoise)")
        if self.schedule is None or type(self.scheduler).__name__ not in FIRST_ORDER:
            raise PipelineConfigError(f"{what} needs a first-order scheduler; {type(self.scheduler).__name__} is "
                                      "multistep: make the sampler with SamplerOptions(batch_changes=True)")
        return self.schedule

    def _noise(self, seeds: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        z = torch.stack([make_noise(fresh(s), like.shape[1:]) for s in seeds])
        return z.to(device=like.device, dtype=like.dtype)


def _dtype(name: str) -> torch.dtype:
    from ..core.torchutil import torch_dtype

    return torch_dtype(name)


def _need_seeds(seeds, rows: int, what: str) -> Sequence[int]:
    if seeds is None or len(seeds) != rows:
        raise ValueError(f"{what} needs one noise seed per row ({rows}), got {seeds!r}: derive them with "
                         "tts.core.noise.derive_seed from the row's lineage and the step")
    return seeds


def _check_family(family, spec, options: SamplerOptions) -> None:
    missing = [n for n in ("prepare", "predict", "decode") if not hasattr(family, n)]
    if missing:
        raise PipelineConfigError(f"pipeline family {family.__name__} has no step-level sampler yet (no "
                                  f"{', '.join(missing)}); use a search that calls the pipeline whole")
    if options.eta > 0 and getattr(family, "STEP_NOISE", False):
        raise PipelineConfigError(f"pipeline family {family.__name__} samples stochastically already (its scheduler "
                                  "draws fresh noise every step): set the search's eta to 0")
    allowed = (*family.ENCODE_KEYS, *getattr(family, "STEP_ARGS", ()))
    unknown = sorted(k for k in spec.call_args if k not in allowed)
    if unknown:
        raise PipelineConfigError(f"pipeline.call_args.{unknown[0]} is not supported by the step-level sampler "
                                  f"for {family.__name__} (it honours {', '.join(allowed) or 'none'}); drop it or "
                                  "use a search that calls the pipeline whole")


def _is_flow(scheduler) -> bool:
    config = scheduler.config
    return ("FlowMatch" in type(scheduler).__name__ or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def _solver(scheduler, options: SamplerOptions):
    """(the scheduler this sampler steps, the fallback's description or None): a copy of the pipeline's, or a
    first-order one of the same noise schedule when the caller changes rows or samples stochastically."""
    name = type(scheduler).__name__
    if name in FIRST_ORDER or not (options.batch_changes or options.eta > 0):
        return copy.deepcopy(scheduler), None
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if _is_flow(scheduler) else DDIMScheduler
    why = "rows change between steps" if options.batch_changes else "stochastic steps (eta > 0)"
    fallback = f"{cls.__name__} (first order) instead of {name} (multistep; {why})"
    log.warning("step-level sampler: %s", fallback)
    shift = scheduler.config.get("flow_shift") if cls is FlowMatchEulerDiscreteScheduler else None
    return cls.from_config(scheduler.config, **({"shift": shift} if shift else {})), fallback


def _schedule(scheduler) -> Schedule | None:
    """The interpolant at a scheduler's steps after ``set_timesteps`` (module docstring). Multistep schedulers
    get one too, for x0 previews only (variance-preserving or flow state); None for the others."""
    name, config = type(scheduler).__name__, scheduler.config
    n = len(scheduler.timesteps)
    if name not in FIRST_ORDER and _is_flow(scheduler):
        sigma = torch.cat([scheduler.timesteps.double().cpu() / config.num_train_timesteps, torch.zeros(1).double()])
        return Schedule(1 - sigma, sigma, torch.ones_like(sigma), "flow", None)
    if name not in FIRST_ORDER and (getattr(scheduler, "init_noise_sigma", 1.0) != 1.0
                                    or not hasattr(scheduler, "alphas_cumprod")):
        return None
    if name == "FlowMatchEulerDiscreteScheduler":
        sigma = scheduler.sigmas.detach().double().cpu()[: n + 1]
        return Schedule(1 - sigma, sigma, torch.ones_like(sigma), "flow", None)
    if name == "EulerDiscreteScheduler":  # state x0 + s eps with s = sigma / alpha (variance exploding)
        ve = scheduler.sigmas.detach().double().cpu()[: n + 1]
        alpha = 1 / torch.sqrt(1 + ve ** 2)
        return Schedule(alpha, ve * alpha, 1 / alpha, config.prediction_type, None)
    if not hasattr(scheduler, "alphas_cumprod"):  # e.g. SCM (TrigFlow): x0 comes from its own step
        return None
    cumprod = scheduler.alphas_cumprod.double().cpu()
    ts = scheduler.timesteps.long().cpu()
    last = int(ts[-1]) - config.num_train_timesteps // scheduler.num_inference_steps
    final_bar = float(getattr(scheduler, "final_alpha_cumprod", 1.0))
    final = cumprod[last] if last >= 0 else torch.as_tensor(final_bar, dtype=torch.float64)
    bar = torch.cat([cumprod[ts], final.reshape(1)])
    clip = float(config.clip_sample_range) if config.get("clip_sample", False) else None
    return Schedule(bar.sqrt(), (1 - bar).sqrt(), torch.ones_like(bar), config.prediction_type, clip)
