"""The project's checkpoint convention: one safetensors file, its format name and config in the header.

Every model file (the ID2 transform, the inpainting models, a pretrained UNet's LaRE
settings) is self-describing this way, and a file of another kind fails at load with
a clear message instead of a shape error deep in a model.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], fmt: str, config: Any) -> None:
    """Tensors (as float32 CPU copies) and the dataclass ``config`` under format ``fmt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": fmt, "config": json.dumps(asdict(config))}
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def read_checkpoint(path: str | Path, fmt: str, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config as a dict, tensors) of a file written by ``write_checkpoint`` with format ``fmt``.
    ``what`` names the expected file in errors, article included ("an ID2 transform file")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path} ({what} expected)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path} is not {what} (format {meta.get('format')!r}, expected {fmt!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    return json.loads(meta["config"]), tensors
