"""The student of a ``BEVDistiller`` checkpoint, as a plain mmdet3d model: weights and config.

The weights go through the core's export path (:mod:`bevdistill.export`); this adds what
mmdet3d needs beside them: ``dataset_meta`` in the checkpoint and a student-only config file.
``mmdet3d.apis.init_model(OUT.py, OUT)`` then builds and loads it without bevdistill, and
``inference_detector`` runs it through the config's test pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config

from bevdistill._io import atomic_write_bytes
from bevdistill.engine.checkpoint import CheckpointMismatchError, read_state_dict
from bevdistill.engine.weights import check_state_dict
from bevdistill.export import student_state, write_student_checkpoint
from bevdistill.mmdet3d.distiller import build_mmdet3d_model, mmdet3d_model_config


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
    student = mmdet3d_model_config(cfg.model.student, "student")
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
    imports = [m for m in (cfg.get("custom_imports") or {}).get("imports", [])
               if not m.startswith("bevdistill")]
    if imports:
        fields["custom_imports"] = dict(imports=imports, allow_failed_imports=False)
    out = Path(out)
    atomic_write_bytes(Config(fields).pretty_text.encode(), out)
    return out


def export_student_checkpoint(
    cfg: Config, checkpoint: str | os.PathLike, out: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``OUT`` (student weights + dataset_meta) and ``OUT`` with suffix ``.py`` (config).

    The weights are checked key by key against the student built from the config first.
    """
    state = student_state(read_state_dict(checkpoint), str(checkpoint))
    check_state_dict(build_mmdet3d_model(cfg.model.student, "student"), state, str(checkpoint))
    info = {"dataset_meta": dataset_meta(cfg),
            "source_checkpoint": str(Path(checkpoint).resolve()), **dict(meta or {})}
    out = write_student_checkpoint(state, out, info,
                                   exported_by="bevdistill.mmdet3d.export_student_checkpoint")
    return out, export_student_config(cfg, out.with_suffix(".py"))
