"""The one export path: a distilled student's weights, written alone, loadable without bevdistill.

``Distiller.export_student`` calls :func:`write_student_checkpoint` on a live model; ``bevdistill
export`` calls :func:`student_state` then the same writer on a run's checkpoint (the mmdet3d
distiller adds the student's config file beside it).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from bevdistill._io import atomic_write_bytes
from bevdistill.engine.checkpoint import CheckpointMismatchError

STUDENT_PREFIX = "student."


def plain_data(value: Any) -> Any:
    """A copy made of str/int/float/bool/None/list/dict only (``weights_only``-loadable);
    modules and other objects become their class name."""
    if isinstance(value, Config):
        value = value.to_dict()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return f"<{type(value).__name__}>"


def student_state(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``student.*`` weights of a distillation checkpoint, prefix removed."""
    found = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not found:
        raise CheckpointMismatchError(
            f"{source} has no '{STUDENT_PREFIX}*' weights: it is not a distillation checkpoint "
            f"(first keys: {list(state)[:5]})"
        )
    return found


def write_student_checkpoint(state: Mapping[str, torch.Tensor], path: str | os.PathLike,
                             meta: Mapping[str, Any] | None = None,
                             exported_by: str = "bevdistill.export") -> Path:
    """Write ``{'state_dict': state, 'meta': {...}}`` atomically (temp file, then rename): a
    crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path).expanduser()
    info = {"exported_by": exported_by, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **plain_data(dict(meta or {}))}
    buffer = io.BytesIO()
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state.items()}, "meta": info},
               buffer)
    atomic_write_bytes(buffer.getvalue(), path)
    return path
