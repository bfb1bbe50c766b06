"""Hook points: dotted module names (``pts_backbone``, ``pts_bbox_head.heatmap_head``) checked
and resolved to the modules they name, with errors that suggest the nearest valid names.

Resolution happens before any hook is installed, so a typo leaves the model untouched.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from torch import nn

from bevdistill.errors import UserError

_ABSENT = object()


class HookPointError(UserError, KeyError):
    """A hook point does not name a module of the model (a failed name lookup)."""

    def __str__(self) -> str:  # KeyError would quote and escape a multi-line message
        return str(self.args[0]) if self.args else ""


def _nearest_names(name: str, names: Sequence[str], n: int = 5) -> list[str]:
    """Names sharing the last dotted part first (``heatmap_head`` -> ``bbox_head.heatmap_head``),
    then the closest spellings."""
    tail = name.rsplit(".", 1)[-1]
    same_tail = [m for m in names if m.rsplit(".", 1)[-1] == tail and m != name]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    return list(dict.fromkeys(same_tail + close))[:n]


def resolve_hook_point(model: nn.Module, name: str) -> nn.Module:
    """The submodule that dotted ``name`` points at, or a :class:`HookPointError` saying why not."""
    if not isinstance(name, str) or not name:
        raise HookPointError(
            f"hook points are non-empty dotted module names such as 'pts_backbone', got {name!r}"
        )
    modules = dict(model.named_modules(remove_duplicate=False))
    if name in modules:
        return modules[name]
    owner: Any = model
    for part in name.split("."):
        owner = getattr(owner, part, _ABSENT) if isinstance(owner, nn.Module) else _ABSENT
        if owner is None:
            raise HookPointError(
                f"hook point {name!r} is None in this {type(model).__name__}: the module was not "
                "built (its config leaves it out, e.g. a LiDAR-only BEVFusion has no camera "
                "branch). Remove it from hook_points."
            )
    if owner is not _ABSENT:
        raise HookPointError(
            f"hook point {name!r} is a {type(owner).__name__}, not an nn.Module; only modules "
            "can be hooked."
        )
    nearest = _nearest_names(name, [m for m in modules if m])
    suggestion = (
        "Nearest valid names: " + ", ".join(repr(m) for m in nearest)
        if nearest
        else "No similar name found."
    )
    raise HookPointError(
        f"unknown hook point {name!r} in {type(model).__name__}. {suggestion}. "
        "List every valid name with: [n for n, _ in model.named_modules()]"
    )


def check_hook_points(hook_points: str | Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple (one name may be given as a string); empty or repeated lists raise."""
    points = (hook_points,) if isinstance(hook_points, str) else tuple(hook_points)
    if not points:
        raise ValueError("hook_points is empty: name at least one module, e.g. 'pts_backbone'")
    repeated = sorted({p for p in points if points.count(p) > 1})
    if repeated:
        raise ValueError(f"hook points listed more than once: {repeated}; list each once")
    return points
