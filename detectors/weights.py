"""Saving and loading one detector model: weights plus its config, in one safetensors file.

Each model class (``LatentDenoiser``, ``InpaintingDetector``,
``MaskDiffusionLocalizer``) has a config dataclass; the file's header
metadata holds the format name and the config as JSON, so a checkpoint is
self-describing and a mismatched file fails with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

M = TypeVar("M", bound=nn.Module)


def save_model(model: nn.Module, path: str | Path, fmt: str) -> None:
    meta = {"format": fmt, "config": json.dumps(asdict(model.config))}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_model(cls: type[M], config_cls: type, path: str | Path, fmt: str) -> M:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path} is not a {fmt} file (format {meta.get('format')!r})")
        tensors: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    model = cls(config_cls(**json.loads(meta["config"])))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {cls.__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_device(model: M, device: torch.device) -> M:
    return model.to(device).requires_grad_(False)
