"""NFEs per image, the one estimate tts-plan, tts-search's checks and tts.search use before anything loads
(``search.nfe_budget`` below one image is refused with it; plan.json's ``nfe_per_candidate``)."""
from __future__ import annotations


def nfe_per_image(spec) -> tuple[float, str]:
    """Steps x denoiser passes per step: 2 with classifier-free guidance (guidance_scale > 1; on Flux, whose
    guidance is distilled into one pass, only with true CFG), else 1. The family comes from the
    checkpoint's model_index.json when it can be read here, else from the model id."""
    from . import PipelineConfigError, family_for, locate

    try:
        family = family_for(locate(spec.model_id).index.get("_class_name", "")).__name__.rsplit(".", 1)[-1]
    except (PipelineConfigError, OSError, ValueError):
        family = "flux" if "flux" in spec.model_id.lower() else "unknown"
    if family == "flux":
        passes = 2 if float(spec.call_args.get("true_cfg_scale", 1.0)) > 1 else 1
    else:
        passes = 2 if spec.guidance_scale > 1 else 1
    return float(spec.num_inference_steps * passes), (f"estimated: {spec.num_inference_steps} steps x {passes} "
                                                      f"pass{'es' if passes > 1 else ''} ({family})")
