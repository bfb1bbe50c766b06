"""Build a detector from a preset name, a config file, an mmengine ``Config`` or a dict.

A preset is a config file ``bevdistill/configs/<name>.py`` and nothing else: adding a file
there adds the preset ``<name>``; no table lists them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch import nn

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_presets() -> tuple[str, ...]:
    """The preset names: one per ``bevdistill/configs/<name>.py`` (``_``-prefixed files excluded)."""
    return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_")))


PRESETS: tuple[str, ...] = list_presets()  # the names at import time, read from the files


def preset_path(name: str) -> Path:
    """Path of a shipped preset config, e.g. ``preset_path('teacher')``."""
    presets = list_presets()
    if name not in presets:
        raise KeyError(
            f"unknown preset {name!r}; the presets are the config files in {CONFIG_DIR}: "
            f"{', '.join(presets)}. Pass one of those names or the path of a config file"
        )
    return CONFIG_DIR / f"{name}.py"


def load_config(cfg: str | os.PathLike | Mapping | Config) -> Config | Mapping:
    """A preset name or a ``.py`` config path loaded as an mmengine ``Config``; a ``Config`` or
    a dict is returned as it is."""
    if isinstance(cfg, (Config, Mapping)):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        text = os.fspath(cfg)
        presets = list_presets()
        if text in presets:
            return Config.fromfile(preset_path(text))
        if os.path.isfile(text):
            return Config.fromfile(text)
        raise KeyError(
            f"{text!r} is neither a preset ({', '.join(presets)}: the config files in "
            f"{CONFIG_DIR}) nor an existing config file"
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
    from bevdistill.models import detector  # noqa: F401 (registers the detector and its parts)

    # bevdistill's parts live in mmengine's root registry; a default scope left at 'mmdet3d' (by
    # mmdet3d's init_model, say) would resolve PillarFeatureNet to mmdet3d's class instead
    with DefaultScope.overwrite_default_scope("mmengine"):
        return MODELS.build(model_config(cfg))


def build_model(spec: Any, role: str = "model") -> nn.Module:
    """An ``nn.Module`` from a module, a preset name, a config path, a dict or a ``Config``.

    Anything but a module goes through :func:`bevdistill.models.build_detector`, which
    understands the project's presets (config files in ``bevdistill/configs``) and
    ``dict(type=..., ...)`` configs registered in mmengine's ``MODELS``.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, (str, os.PathLike, Mapping, Config)):
        model = build_detector(spec)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the {role} config built a {type(model).__name__}, not an nn.Module")
        return model
    raise TypeError(
        f"{role} must be an nn.Module, a preset name, a config path, a dict or an mmengine "
        f"Config; got {type(spec).__name__}"
    )
