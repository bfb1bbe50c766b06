"""The student of a ``BEVDistiller`` checkpoint, as a plain mmdet3d model: weights and config.

``mmdet3d.apis.init_model(OUT.py, OUT)`` then builds and loads it without bevdistill, and
``inference_detector`` runs it through the config's test pipeline.
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

from bevdistill.distiller import _plain
from bevdistill.engine.checkpoint import (
    CheckpointMismatchError,
    atomic_write_bytes,
    check_state_dict,
    read_state_dict,
)
from bevdistill.mmdet3d.distiller import build_mmdet3d_model, model_config

STUDENT_PREFIX = "student."


def dataset_meta(cfg: Config) -> dict:
    """``{'classes': [...]}`` from the config's test (else train) dataset metainfo or class_names."""
    datasets = [(cfg.get(loader) or {}).get("dataset", {})
                for loader in ("test_dataloader", "val_dataloader", "train_dataloader")]
    for dataset in [cfg.get("test_dataset") or {}, *datasets]:
        meta = dataset.get("metainfo")
        if meta and "classes" in meta:
            return {"classes": list(meta["classes"])}
    if "class_names" in cfg:
        return {"classes": list(cfg.class_names)}
    raise CheckpointMismatchError(
        "the config names no classes (test_dataloader.dataset.metainfo.classes or class_names); "
        "mmdet3d's init_model needs them to label predictions"
    )


def export_student_config(cfg: Config, out: str | os.PathLike) -> Path:
    """Write a student-only mmdet3d config: the student model, test pipeline and scope.

    ``custom_imports`` keeps the user's own modules (BEVFusion's project) but not bevdistill's:
    the student is a plain mmdet3d model.
    """
    student = model_config(cfg.model.student, "student")
    fields: dict[str, Any] = dict(model=student, default_scope=cfg.get("default_scope", "mmdet3d"))
    for key in ("test_dataloader", "test_pipeline", "class_names", "point_cloud_range"):
        if key in cfg:
            fields[key] = cfg[key]
    if "test_dataloader" not in fields:  # a training-only config names its test dataset apart
        if "test_dataset" not in cfg:
            raise CheckpointMismatchError(
                "the config has neither test_dataloader nor test_dataset; the exported config "
                "needs one for mmdet3d's inference_detector (its pipeline and box_type_3d)"
            )
        fields["test_dataloader"] = dict(
            batch_size=1, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=cfg.test_dataset,
        )
    imports = [m for m in (cfg.get("custom_imports") or {}).get("imports", []) if not m.startswith("bevdistill")]
    if imports:
        fields["custom_imports"] = dict(imports=imports, allow_failed_imports=False)
    out = Path(out)
    atomic_write_bytes(Config(fields).pretty_text.encode(), str(out))
    return out


def export_student_checkpoint(
    cfg: Config, checkpoint: str | os.PathLike, out: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``OUT`` (student weights + dataset_meta) and ``OUT`` with suffix ``.py`` (config).

    The weights are checked key by key against the student built from the config first.
    """
    state = read_state_dict(checkpoint)
    student_state = {
        k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)
    }
    if not student_state:
        raise CheckpointMismatchError(
            f"{checkpoint} has no '{STUDENT_PREFIX}*' weights: it is not a BEVDistiller "
            f"checkpoint (first keys: {list(state)[:5]})"
        )
    student = build_mmdet3d_model(cfg.model.student, "student")
    check_state_dict(student, student_state, str(checkpoint))
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "dataset_meta": dataset_meta(cfg),
        "exported_by": "bevdistill.mmdet3d.export_student_checkpoint",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "source_checkpoint": str(Path(checkpoint).resolve()),
        **_plain(dict(meta or {})),
    }
    buffer = io.BytesIO()
    torch.save({"state_dict": student_state, "meta": info}, buffer)
    atomic_write_bytes(buffer.getvalue(), str(out))
    config_path = export_student_config(cfg, out.with_suffix(".py"))
    return out, config_path
