"""Build a detector from a preset name, a config file, an mmengine ``Config`` or a dict."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import MODELS
from torch import nn

from bevdistill.models import detector  # noqa: F401 (registers the detector and its parts)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS: tuple[str, ...] = ("teacher", "student", "bevfusion_scale")


def preset_path(name: str) -> Path:
    """Path of a shipped preset config, e.g. ``preset_path('teacher')``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {list(PRESETS)} or pass a config path")
    return CONFIG_DIR / f"{name}.py"


def load_config(cfg: str | os.PathLike | Mapping | Config) -> Config | Mapping:
    """A preset name or a ``.py`` config path loaded as an mmengine ``Config``; a ``Config`` or
    a dict is returned as it is."""
    if isinstance(cfg, (Config, Mapping)):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        text = os.fspath(cfg)
        if text in PRESETS:
            return Config.fromfile(preset_path(text))
        if os.path.isfile(text):
            return Config.fromfile(text)
        raise KeyError(
            f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing config file"
        )
    raise TypeError(
        f"a detector config must be a preset name, a path, a Config or a dict, got {type(cfg).__name__}"
    )


def model_config(cfg: str | os.PathLike | Mapping | Config) -> dict:
    """The model section: ``cfg.model`` when present, else the config itself if it names a ``type``."""
    loaded = load_config(cfg)
    loaded = loaded.to_dict() if isinstance(loaded, Config) else copy.deepcopy(dict(loaded))
    model = loaded.get("model", loaded)
    if not isinstance(model, Mapping) or "type" not in model:
        raise KeyError(
            "the config has neither a 'model' dict nor a top-level 'type'; write "
            "model = dict(type='PillarBEVDetector', ...) as the presets do"
        )
    return dict(model)


def build_detector(cfg: str | os.PathLike | Mapping | Config) -> nn.Module:
    """Build ``cfg``'s model through mmengine's ``MODELS`` registry, e.g. ``build_detector('student')``."""
    return MODELS.build(model_config(cfg))
