"""Saving and loading one detector model: weights plus its config, in one safetensors file.

Each model class (``LatentDenoiser``, ``InpaintingDetector``,
``MaskDiffusionLocalizer``) has a config dataclass; the file's header
metadata holds the format name and the config as JSON (``indexer.checkpoint``,
the convention every model file here follows), so a checkpoint is
self-describing and a mismatched file fails with a clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from indexer.checkpoint import read_checkpoint, write_checkpoint

M = TypeVar("M", bound=nn.Module)


def save_model(model: nn.Module, path: str | Path, fmt: str) -> None:
    write_checkpoint(path, model.state_dict(), fmt, model.config)


def load_model(cls: type[M], config_cls: type, path: str | Path, fmt: str) -> M:
    fields, tensors = read_checkpoint(path, fmt, f"a {fmt} file")
    model = cls(config_cls(**fields))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {cls.__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_device(model: M, device: torch.device) -> M:
    return model.to(device).requires_grad_(False)
