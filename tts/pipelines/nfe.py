"""NFEs per image, the one estimate tts-plan, tts-search's checks and tts.search use before anything loads
(``search.nfe_budget`` below one image is refused with it; plan.json's ``nfe_per_candidate``)."""
from __future__ import annotations


def nfe_per_image(spec) -> tuple[float, str]:
    """Steps x denoiser passes per step (``passes_per_step``: 2 with classifier-free guidance; 1 where guidance
    is distilled into the denoiser, as Flux's, FLUX.2's and Sana-Sprint's; Flux and Qwen-Image 2 only with true
    CFG; Z-Image 2 whenever guidance_scale > 0). The family comes from the checkpoint's model_index.json when it
    can be read here, else is guessed from the model id."""
    from . import PipelineConfigError, family_by_model_id, family_for, locate, passes_per_step

    try:
        family = family_for(locate(spec.model_id).index.get("_class_name", ""))
    except (PipelineConfigError, OSError, ValueError):
        family = family_by_model_id(spec.model_id)
    name = family.__name__.rsplit(".", 1)[-1] if family is not None else "unknown family"
    passes = passes_per_step(family, spec.guidance_scale, spec.call_args) if family is not None else (
        2 if spec.guidance_scale > 1 else 1)
    return float(spec.num_inference_steps * passes), (f"estimated: {spec.num_inference_steps} steps x {passes} "
                                                      f"pass{'es' if passes > 1 else ''} ({name})")
