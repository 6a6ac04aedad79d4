"""What a request may hold, checked before any work is queued: noise lineages, uploaded prompt embeddings, model
names; a refusal is a :class:`RequestError` with its HTTP status and a message naming the problem."""
from __future__ import annotations

import base64
import difflib
import hashlib

from ...core.validate import is_int, is_number
from ...sampling.generate import Embeds

MAX_LINEAGE_DEPTH = 256
EMBED_KEYS = frozenset({"prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                        "negative_pooled_prompt_embeds", "negative_prompt_attention_mask"})



class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_lineage(lineage, where: str) -> None:
    """A noise lineage as tts.core.noise describes it (fresh, or neighbour of a pivot), iteratively, to a bounded depth."""
    node = lineage
    for _ in range(MAX_LINEAGE_DEPTH):
        if not isinstance(node, dict):
            raise RequestError(422, f"{where}: a lineage is an object, got {type(node).__name__}")
        seed = node.get("seed")
        if not is_int(seed) or not 0 <= seed < 2 ** 63:
            raise RequestError(422, f"{where}: seed must be an integer in [0, 2**63), got {seed!r}")
        kind = node.get("kind")
        if kind == "fresh":
            if set(node) != {"kind", "seed"}:
                raise RequestError(422, f"{where}: a fresh lineage has only kind and seed, got {sorted(node)}")
            return
        if kind != "neighbor":
            raise RequestError(422, f"{where}: kind must be 'fresh' or 'neighbor', got {kind!r}")
        tau = node.get("threshold")
        if not is_number(tau) or not 0 < tau < 1:
            raise RequestError(422, f"{where}: threshold must lie strictly between 0 and 1, got {tau!r}")
        if set(node) != {"kind", "seed", "threshold", "pivot"}:
            raise RequestError(422, f"{where}: a neighbor lineage has kind, seed, threshold and pivot, got "
                                    f"{sorted(node)}")
        node, where = node["pivot"], f"{where}.pivot"
    raise RequestError(422, f"{where}: lineage deeper than {MAX_LINEAGE_DEPTH} pivots")


def decode_embeds(text) -> Embeds:
    """``prompt_embeds``: base64 of a safetensors file with the family's encoding outputs (batch size 1)."""
    from safetensors.torch import load

    if not isinstance(text, str):
        raise RequestError(422, "prompt_embeds must be a base64 string of a safetensors file")
    try:
        raw = base64.b64decode(text, validate=True)
        tensors = load(raw)
    except Exception as e:  # noqa: BLE001 - any undecodable upload is the client's error
        raise RequestError(422, f"prompt_embeds is not base64 of a safetensors file ({type(e).__name__}: "
                                f"{e})") from None
    if "prompt_embeds" not in tensors or not set(tensors) <= EMBED_KEYS:
        raise RequestError(422, f"prompt_embeds must hold prompt_embeds and only {', '.join(sorted(EMBED_KEYS))}; "
                                f"got {', '.join(sorted(tensors))}")
    if any(t.ndim == 0 or t.shape[0] != 1 for t in tensors.values()):
        raise RequestError(422, "prompt_embeds tensors must have batch size 1 (the server repeats them)")
    return Embeds(hashlib.sha256(raw).hexdigest(), tensors)


def _known(name: str, registry: dict) -> None:
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RequestError(404, f"unknown model {name!r}{hint} available: {', '.join(sorted(registry))}")

