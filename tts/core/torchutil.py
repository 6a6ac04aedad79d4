"""Torch settings shared by pipelines and verifiers: dtype names and the ``auto`` device.

One rule everywhere: ``device: auto`` is the CUDA GPU when there is one, else Apple's MPS when
available, else the CPU (``torch.backends.mps.is_available()``, PyTorch's MPS backend docs); dtypes are
named ``fp32``, ``fp16``, ``bf16`` in every config. torch is imported only when a function is called, so
validating a config stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPES = ("fp32", "fp16", "bf16")


def check_dtype(key: str, name: str, allow_auto: bool = False) -> str:
    """``name`` if it is a dtype name (or ``auto`` where allowed), else ValueError naming ``key``."""
    if name in DTYPES or (allow_auto and name == "auto"):
        return name
    choices = ("auto", *DTYPES) if allow_auto else DTYPES
    raise ValueError(f"{key} must be one of {', '.join(choices)}, got {name!r}")


def torch_dtype(name: str) -> "torch.dtype":
    """The torch dtype of ``fp32``, ``fp16`` or ``bf16``."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[check_dtype("dtype", name)]


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto``: CUDA if available, else MPS if available, else CPU; any other name as torch reads it."""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str, device: "torch.device", on_cuda: str = "fp16") -> "torch.dtype":
    """``auto``: ``on_cuda`` on a CUDA device, fp32 elsewhere (CPU and MPS); else the named dtype."""
    if name == "auto":
        return torch_dtype(on_cuda if device.type == "cuda" else "fp32")
    return torch_dtype(name)
