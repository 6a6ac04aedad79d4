"""Layer 7: one search job end to end in its run folder: ``runjob`` (config and plan recorded, then the
search), ``job`` (what a search is), ``loop`` (the run folder's prompts, each handed to a driver), ``rounds`` (the
ask/tell driver), ``inloop`` (the in-loop driver), ``verify`` (candidates verified and recorded, round JSONs),
``resume`` (what a folder already holds), ``summary`` (summary.json), ``lockstep`` (several prompts in one
pipeline call), ``shard`` (splitting prompts over workers) and ``safety`` (blocked candidates, prompt rewrites,
fallback pipelines: a generator around the search's generator). Imports views and below."""
