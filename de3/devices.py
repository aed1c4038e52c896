"""Where and in what precision inference runs: the device and dtype names users give."""

from __future__ import annotations

import torch

from de3.errors import De3Error

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` → CUDA when present, else the CPU; any other name as torch reads it, checked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise De3Error(f"device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise De3Error(f"device {device!r}: CUDA is not available here (use auto or cpu)")
    return resolved


def resolve_precision(precision: str) -> torch.dtype:
    """fp32 | bf16 | fp16 → the dtype the model runs in."""
    if precision not in PRECISIONS:
        raise De3Error(f"precision {precision!r}: choose from {sorted(PRECISIONS)}")
    return PRECISIONS[precision]
