"""Shared set-up of the mmdet3d tests: skip (or, in CI, fail) without mmdet3d or the real frame."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "bevdistill" / "configs" / "mmdet3d"
CPU_CONFIG = CONFIG_DIR / "centerpoint_pillar_cpu.py"


def require_mmdet3d_or_skip() -> None:
    """Skip where mmdet3d is not installed; in CI (CI=true) that is a failure: CI installs it."""
    try:
        from bevdistill.mmdet3d import require_mmdet3d

        require_mmdet3d()
    except ImportError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the mmdet3d tests, but: {exc}")
        pytest.skip(str(exc), allow_module_level=True)


def demo_root_or_skip() -> Path:
    from bevdistill.data.nuscenes import demo_frame_dir, demo_info_path, demo_missing_message

    if demo_info_path() is None:
        pytest.skip(demo_missing_message(), allow_module_level=True)
    return demo_frame_dir()


def cpu_config():
    """The CPU distillation config, reading the demo frame wherever it was found."""
    from mmengine.config import Config

    root = demo_root_or_skip()
    cfg = Config.fromfile(str(CPU_CONFIG))
    cfg.train_dataloader.dataset.data_root = str(root)
    cfg.test_dataset.data_root = str(root)
    return cfg
