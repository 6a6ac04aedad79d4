"""tts: inference-time scaling for text-to-image diffusion models (search over noises, scored by verifiers).

The Python API (tts.api, docs/python-api.md) is loaded on first use, so ``import tts`` stays cheap::

    import tts
    pipe = tts.load_pipeline("shapes")
    result = tts.search(pipe, "a red circle left of a blue square", verifier="shapes", strategy="smc", nfe_budget=160)

``tts.search`` is both the package of search strategies (``tts.search.smc``) and, called, the API's search
(:func:`tts.api.search`): importing any submodule sets the package as the attribute ``search`` of ``tts``, so the
package itself is made callable here, above every layer.
"""
from __future__ import annotations

import logging
import types

# Import-time notices that say nothing to a tts user, off (the loggers' levels only; no handler is installed):
# bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (its optional CPU kernels) and
# transformers' "`CLIPImageProcessor` requires torchvision ... falling back to ...Pil" (the PIL processors
# are what tts uses).
IMPORT_NOTICES = ("bitsandbytes.backends.cpu.ops", "transformers.utils.import_utils")
for _name in IMPORT_NOTICES:
    logging.getLogger(_name).setLevel(logging.ERROR)

_API = ("load_pipeline", "load_run", "Pipeline", "SearchResult", "ScoredImage", "Run")
__all__ = ["search", *_API]


class _CallableSearchPackage(types.ModuleType):
    """The strategies package, callable as :func:`tts.api.search`."""

    def __call__(self, *args, **kwargs):
        from .api import search

        return search(*args, **kwargs)


from . import search  # noqa: E402 - the strategies package (cheap: no torch), made callable below

search.__class__ = _CallableSearchPackage


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
