"""Layer 4: generating images from noises with a loaded pipeline: whole batches (``generate``), one denoising
step at a time (``sampler``) and particles with NFE accounting (``particles``). Imports pipelines and below."""
