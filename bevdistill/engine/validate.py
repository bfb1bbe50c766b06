"""Check an experiment config before anything is built: every key known, every value in range.

A typo must not train on the defaults: ``shedule.lr=0.1`` or ``seeed=5`` used to be ignored
and ``model.teacher_ckp`` failed deep in the model build. :func:`check_experiment` runs on the
loaded config (file plus ``--cfg-options``) and raises :class:`ExperimentConfigError` naming
the dotted key, what it must be, and the nearest known key (``difflib``). The rules:

* top level: the experiment keys of :data:`TOP_LEVEL`. A config file may also define helper
  variables of its own (``point_cloud_range = [...]``, used by its dicts); such a name is
  accepted unless it is within :data:`SIMILAR` of an experiment key (``shedule``), which is
  taken for a typo. ``--cfg-options`` may only set experiment keys or names the file defines;
* ``schedule`` and ``data``: the keys and value rules of :data:`SCHEDULE` and :data:`DATA`;
* every dict with a ``type`` (``model`` and what it nests, the datasets, ``val_evaluator``):
  the keyword arguments of that registered class's constructor, read with
  :func:`inspect.signature` when the check runs (so a class that gains or renames an argument
  needs no edit here); a constructor taking ``**kwargs`` accepts any key;
* the few untyped dicts a constructor unpacks itself (:data:`NESTED`, e.g. a dataset's
  ``lidar`` settings): the fields or arguments of what they configure.

Values are checked by type and range for the top-level, ``schedule`` and ``data`` keys (a
string where a number belongs, ``lr <= 0``, ``batch_size < 1``, ``num_workers < 0`` ...);
a model's own values are checked by its constructor.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.registry import DATASETS, METRICS, MODELS

from bevdistill.errors import ExperimentConfigError

SIMILAR = 0.8  # difflib ratio above which an unknown top-level file name is taken for a typo
ROLES = ("teacher", "student", "distill")


# --- value rules -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a value must be: ``accepts(value)`` is True when it is, ``text`` says it."""

    text: str
    accepts: Callable[[Any], bool]

    def __or__(self, other: Rule) -> Rule:
        return Rule(f"{self.text} or {other.text}", lambda v: self.accepts(v) or other.accepts(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Rule:
    """A finite number; ``low`` inclusive unless ``above``; ``high`` inclusive."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")

    def accepts(v: Any) -> bool:
        return _is_number(v) and (low is None or (v > low if above else v >= low)) and (
            high is None or v <= high)

    return Rule("a number" + (" " + " and ".join(parts) if parts else ""), accepts)


def integer(low: int | None = None) -> Rule:
    return Rule(f"a whole number >= {low}" if low is not None else "a whole number",
                lambda v: isinstance(v, int) and not isinstance(v, bool)
                and (low is None or v >= low))


NONE = Rule("None", lambda v: v is None)
BOOL = Rule("True or False", lambda v: isinstance(v, bool))
TEXT = Rule("a string", lambda v: isinstance(v, (str, os.PathLike)))
DICT = Rule("a dict", lambda v: isinstance(v, Mapping))
ANY = Rule("anything", lambda v: True)


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {list(choices)}", lambda v: v in choices)


def pair(item: Rule) -> Rule:
    return Rule(f"two values, each {item.text}",
                lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(item.accepts, v)))


# The experiment's keys and what each may hold (bevdistill.engine.runner reads them).
TOP_LEVEL: dict[str, Rule] = {
    "role": one_of(*ROLES),
    "model": DICT,
    "train_dataset": DICT,
    "val_dataset": DICT,
    "val_evaluator": DICT,
    "data": DICT,
    "schedule": DICT,
    "seed": integer(0),
    "deterministic": BOOL,
    "amp": BOOL,
    "amp_dtype": one_of("float16", "bfloat16"),
    "init_from": NONE | TEXT,
    "log_level": one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "experiment_name": NONE | TEXT,
    "save_rank_weights": BOOL,
    "crash_at_iter": NONE | integer(1),
    "find_unused_parameters": BOOL,
    "custom_imports": DICT,
}
INTERVAL = NONE | integer(1)
SCHEDULE: dict[str, Rule] = {
    "max_iters": integer(1),
    "lr": number(0, above=True),
    "weight_decay": number(0),
    "betas": pair(Rule("a number >= 0 and < 1", lambda v: _is_number(v) and 0 <= v < 1)),
    "warmup_iters": integer(0),
    "warmup_start_factor": number(0, 1, above=True),
    "min_lr_ratio": number(0, 1),
    "grad_clip": NONE | number(0),
    "val_interval": INTERVAL,
    "checkpoint_interval": INTERVAL,
    "max_keep_ckpts": integer(-1),
    "log_interval": integer(1),
}
DATA: dict[str, Rule] = {
    "batch_size": integer(1),
    "val_batch_size": integer(1),
    "num_workers": integer(0),
}
SECTIONS = {"schedule": SCHEDULE, "data": DATA}

# Untyped dicts that a registered class unpacks itself: (class name, argument) -> what they
# configure, as "module:attribute" (a dataclass, a callable, or a dict of defaults).
NESTED: dict[tuple[str, str], str] = {
    ("SyntheticBEVDataset", "scene"): "bevdistill.data.scene:SceneConfig",
    ("SyntheticBEVDataset", "lidar"): "bevdistill.data.lidar:LidarConfig",
    ("SyntheticBEVDataset", "teacher_lidar"): "bevdistill.data.lidar:LidarConfig",
    ("SyntheticBEVDataset", "augment"): "bevdistill.data.transforms:GlobalAugment",
    ("NuScenesBEVDataset", "augment"): "bevdistill.data.transforms:GlobalAugment",
    ("PillarBEVDetector", "pts_voxel_layer"): "bevdistill.models.voxelize:PillarVoxelizer",
    ("CenterPointHead", "train_cfg"): "bevdistill.models.centerpoint_head:DEFAULT_TRAIN_CFG",
    ("CenterPointHead", "test_cfg"): "bevdistill.models.centerpoint_head:DEFAULT_TEST_CFG",
    ("Distiller", "distill"): "bevdistill.losses.recipe:TUTORIAL_DEFAULTS",  # converted
}


# --- reading a config file ---------------------------------------------------------------------


def load_config_file(path: str | os.PathLike) -> Config:
    """``Config.fromfile`` whose parse errors name the file, the line and the cause."""
    path = os.fspath(path)
    try:
        return Config.fromfile(path)
    except SyntaxError as exc:
        where = f"{path}, line {exc.lineno}" if exc.lineno else path
        raise ExperimentConfigError(
            f"config {where}: Python syntax error: {exc.msg}"
            + (f": {exc.text.strip()!r}" if exc.text else "") + "; fix the file") from exc
    except FileNotFoundError as exc:
        raise ExperimentConfigError(
            f"config {path}: a file it reads does not exist ({exc.filename or exc}); check its "
            "_base_ paths, which are relative to the config file") from exc
    except Exception as exc:  # noqa: BLE001 - the file is the user's code: whatever it raises
        kind = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}.get(Path(path).suffix, "Python")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExperimentConfigError(
            f"config {path} cannot be read ({kind}: {type(exc).__name__}: {first}); fix the "
            "file") from exc


# --- checking ----------------------------------------------------------------------------------


def nearest(key: str, known: Any, where: str = "") -> str:
    """``; did you mean 'where.x'?`` for the closest known key, else the known keys."""
    known = sorted(str(k) for k in known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {_dotted(where, close[0])!r}?"
    return f"; known keys{f' of {where}' if where else ''}: {', '.join(known)}"


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _unknown(where: str, key: str, known: Any, fix: str = "") -> ExperimentConfigError:
    return ExperimentConfigError(
        f"unknown config key {_dotted(where, key)!r}{nearest(key, known, where)}{fix}")


def check_value(key: str, value: Any, rule: Rule) -> None:
    if rule.accepts(value):
        return
    hint = ""
    if isinstance(value, str):
        hint = " (a string: write the value without quotes)"
    elif isinstance(value, float) and not math.isfinite(value):
        hint = " (not finite)"
    raise ExperimentConfigError(
        f"config key {key!r} must be {rule.text}, got {value!r}{hint}; e.g. --cfg-options "
        f"{key}=VALUE")


def check_section(name: str, given: Mapping[str, Any] | None) -> None:
    """``schedule`` or ``data``: known keys, values in range."""
    rules = SECTIONS[name]
    for key, value in dict(given or {}).items():
        if key not in rules:
            raise _unknown(name, key, rules)
        check_value(f"{name}.{key}", value, rules[key])


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def known_keys(target: Any) -> set[str] | None:
    """The keyword arguments ``target`` takes (None: any, it has ``**kwargs``). A class whose
    ``**kwargs`` only converts keys it used to take names them in ``LEGACY_KEYS``."""
    if isinstance(target, Mapping):
        return set(target)
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}
    params = inspect.signature(target).parameters.values()
    named = {p.name for p in params if p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                      inspect.Parameter.VAR_KEYWORD)
             and p.name != "self"}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        legacy = getattr(target, "LEGACY_KEYS", None)
        return None if legacy is None else named | set(legacy)
    return named


def _registered(registry, type_name: Any, where: str) -> type | None:
    if isinstance(type_name, type):
        return type_name
    if not isinstance(type_name, str):
        raise ExperimentConfigError(f"config key '{where}.type' must be a class name, got "
                                    f"{type_name!r}")
    cls = registry.get(type_name)
    if cls is None and "." not in type_name:  # registered in another scope (mmdet3d): not ours
        names = list(registry.module_dict)
        raise ExperimentConfigError(
            f"config key '{where}.type' = {type_name!r} is not a registered {registry.name}"
            f"{nearest(type_name, names)}")
    return cls


def check_typed(cfg: Mapping[str, Any], where: str, registry=MODELS) -> None:
    """A ``dict(type=...)``: its keys against the constructor of the registered class, and the
    typed or :data:`NESTED` dicts inside it, recursively."""
    cls = _registered(registry, cfg.get("type"), where)
    if cls is None:
        return
    known = known_keys(cls)
    for key, value in cfg.items():
        if key == "type" or key.startswith("_"):
            continue
        if known is not None and key not in known:
            raise _unknown(where, key, known, f" ({cls.__name__} takes no {key!r})")
        path = f"{where}.{key}"
        if isinstance(value, Mapping) and "type" in value:
            check_typed(value, path, MODELS)
        elif isinstance(value, Mapping) and (cls.__name__, key) in NESTED:
            sub = known_keys(_resolve(NESTED[cls.__name__, key]))
            for sub_key in value:
                if sub is not None and sub_key not in sub:
                    raise _unknown(path, sub_key, sub)


def check_experiment(cfg: Config, file_keys: set[str] | None = None) -> None:
    """Every key of an experiment config known and every checked value in range (see the module
    docstring). ``file_keys``: the top-level names the config file itself defines; None takes
    every key of ``cfg`` as defined by the file."""
    file_keys = set(cfg) if file_keys is None else set(file_keys)
    typos = []  # names the file defines that look like misspelt experiment keys
    for key, value in cfg.items():
        if key in TOP_LEVEL:
            check_value(key, value, TOP_LEVEL[key])
            continue
        if key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, TOP_LEVEL, n=1, cutoff=SIMILAR)
        if key not in file_keys:
            raise _unknown("", key, TOP_LEVEL, " (experiment keys only, or a name the config "
                                               "file defines)")
        if close:
            typos.append(f"{key!r} (did you mean {close[0]!r}?)")
    if typos:
        raise ExperimentConfigError(
            f"config {Path(cfg.filename or '').name or 'file'} defines {', '.join(typos)}, "
            "which are not experiment keys; rename them")
    for name in SECTIONS:
        check_section(name, cfg.get(name))
    for key, registry in (("model", MODELS), ("train_dataset", DATASETS),
                          ("val_dataset", DATASETS), ("val_evaluator", METRICS)):
        value = cfg.get(key)
        if isinstance(value, Mapping) and "type" in value:
            check_typed(value, key, registry)
