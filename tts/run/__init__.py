"""Layer 7: one search job end to end in its run folder: ``runjob`` (config and plan recorded, then the
search), ``loop`` (the ask/tell driver, round JSONs, summary), ``inloop`` (the in-loop driver), ``lockstep``
(several prompts in one pipeline call), ``shard`` (splitting prompts over workers) and ``safety`` (blocked
candidates, prompt rewrites, fallback pipelines). Imports views and below."""
