"""tts: inference-time scaling for text-to-image diffusion models (search over noises, scored by verifiers).

The Python API (tts.api, docs/python-api.md) is loaded on first use, so ``import tts`` stays cheap::

    import tts
    pipe = tts.load_pipeline("shapes")
    result = tts.search(pipe, "a red circle left of a blue square", verifier="shapes", strategy="smc", nfe_budget=160)
"""
from __future__ import annotations

_API = ("load_pipeline", "search", "load_run", "Pipeline", "SearchResult", "ScoredImage", "Run")
__all__ = list(_API)


def __getattr__(name: str):
    if name == "search":  # the strategies package, callable as tts.api.search (tts/search/__init__.py)
        import importlib

        return importlib.import_module(f"{__name__}.search")
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
