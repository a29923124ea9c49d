"""The project's checkpoint format: one safetensors file, its format name and config in the header.

Every model file (the ID2 transform, the inpainting models, a pretrained UNet's LaRE
settings) is self-describing this way, and a file of another kind fails at load with
a clear message instead of a shape error deep in a model.

* ``write_checkpoint`` / ``read_checkpoint``: tensors plus a config dataclass;
* ``save_model`` / ``load_model``: the same for an ``nn.Module`` whose ``config``
  attribute is its config dataclass (the detectors' models, the CNN inpainter).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

M = TypeVar("M", bound=nn.Module)


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


def save_model(model: nn.Module, path: str | Path, fmt: str) -> None:
    write_checkpoint(path, model.state_dict(), fmt, model.config)


def load_model(cls: type[M], config_cls: type, path: str | Path, fmt: str) -> M:
    fields, tensors = read_checkpoint(path, fmt, f"a {fmt} file")
    model = cls(config_from_dict(config_cls, fields, path))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {cls.__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def config_from_dict(config_cls: type, fields: dict[str, Any], path: str | Path = "") -> Any:
    """``config_cls(**fields)``, where fields a config class has retired are accepted at
    their neutral value (``config_cls.RETIRED``: name -> value) and dropped, so checkpoints
    written before a field was retired still load; any other value of one is refused."""
    retired = getattr(config_cls, "RETIRED", {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    kept = {}
    for name, value in fields.items():
        if name in known:
            kept[name] = value
        elif name in retired and value == retired[name]:
            continue
        elif name in retired:
            raise ValueError(f"{path}: {name}={value!r} is a retired {config_cls.__name__} option "
                             f"(only {retired[name]!r} loads)")
        else:
            raise ValueError(f"{path}: unknown {config_cls.__name__} field {name!r}")
    return config_cls(**kept)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
