"""Gradients through the denoising loop: a final image as a differentiable function of its initial noise.

Gradient noise optimisation (tts.search.noise_opt, ReNO: Eyring et al. 2024, arXiv 2406.04312) needs the
gradient of a reward of the final image with respect to the initial noise, through every denoising step. The
engine that owns the denoising loop (tts.sampling.sampler) steps without gradients; :class:`Differentiable`
replays the very same operations (the deterministic sampler's steps: the family's ``predict`` and the scheduler's
``step``, in the same order and dtype) with autograd on, so its forward values equal the sampler's (and a
replay's) for the same noise, and adds the family's differentiable decoder (``decode_tensor``: latents to a
(B, 3, H, W) tensor of RGB in [0, 1]).

**NFE ledger.** The denoiser's forward passes are counted by the sampler's hook (rows evaluated; guidance
doubles them). A backward pass through them is charged as two forwards (the usual estimate: a backward costs
about twice a forward, so a differentiated step costs 3 NFEs per row and pass, a forward-only one 1):
:func:`charged` is the one rule.
"""
from __future__ import annotations

import dataclasses

import torch

from ..pipelines import PipelineConfigError
from .sampler import Sampler, Trajectories, _dtype

#: a backward pass through the denoiser costs this many forward passes (forward + backward = 1 + BACKWARD)
BACKWARD = 2.0


def charged(forward_nfe: float, backward: bool) -> float:
    """NFEs a pass is charged: its forward evaluations, times 1 + BACKWARD when it is differentiated."""
    return forward_nfe * (1.0 + BACKWARD) if backward else forward_nfe


def differentiable_families() -> str:
    return "shapes, sd (sd15, sd-turbo)"


class Differentiable:
    """The final images of initial noises, differentiable (see the module docstring), on a deterministic sampler."""

    def __init__(self, sampler: Sampler, prompt: str):
        if sampler.options.eta != 0:
            raise ValueError("gradients through the sampler need the deterministic sampler (eta 0)")
        if not hasattr(sampler.family, "decode_tensor"):
            raise PipelineConfigError(
                f"search=noise-opt needs a differentiable decoder, which pipeline family "
                f"{sampler.family.__name__.rsplit('.', 1)[-1]} has not (decode_tensor); use one of: "
                f"{differentiable_families()}")
        self.sampler, self.prompt = sampler, prompt

    def start(self, noise: torch.Tensor, lineage: dict) -> Trajectories:
        """Step-0 trajectories whose latents are ``noise`` (B, *latent shape) itself, gradients kept."""
        s = self.sampler
        traj = s.start(self.prompt, [lineage] * noise.shape[0])  # conditioning and schedule (no denoiser call)
        latents = s.family.to_pipeline_latents(s.pipe, noise, s.spec.height, s.spec.width)
        latents = latents.to(device=s.pipe._execution_device, dtype=_dtype(s.spec.dtype))
        latents = latents.to(_dtype(getattr(s.family, "STATE_DTYPE", s.spec.dtype)))
        latents = latents * getattr(s.scheduler, "init_noise_sigma", 1.0)
        return dataclasses.replace(traj, latents=latents)

    def images(self, noise: torch.Tensor, lineage: dict) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(final latents, images (B, 3, H, W) in [0, 1], forward NFEs) of ``noise``, with autograd on."""
        s = self.sampler
        traj = self.start(noise, lineage)
        s.counter.rows = 0
        forwards = 0.0
        with torch.enable_grad():
            latents = traj.latents
            for i in range(s.num_steps):
                t = s.scheduler.timesteps[i]
                s._at(i)
                model_input = s.scheduler.scale_model_input(latents, t) if hasattr(s.scheduler, "scale_model_input") \
                    else latents
                s.counter.rows = 0
                out = s.family.predict(s.pipe, traj.cond, model_input, t)
                forwards += s.counter.rows
                s._at(i)
                latents = s.scheduler.step(out, t, latents, return_dict=True).prev_sample
            pixels = s.family.decode_tensor(s.pipe, latents, s.spec.height, s.spec.width)
        return latents, pixels, forwards
