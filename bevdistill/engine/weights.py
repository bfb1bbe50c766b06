"""Weights into a model, key by key: what fits, what is missing, what is mis-shaped.

One comparison (:meth:`LoadReport.compare`) serves both uses: :func:`check_state_dict`, which
refuses any mismatch (evaluation, export), and :func:`load_weights`, which loads a teacher and
says what it did. Checkpoints are read by :func:`bevdistill.engine.checkpoint.read_state_dict`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bevdistill.engine.checkpoint import CheckpointMismatchError, read_state_dict

KEYS_SHOWN = 8  # keys listed per category in a load report


@dataclass
class LoadReport:
    """What loading a checkpoint into a model did, key by key."""

    source: str
    matched: int = 0  # tensors whose key and shape fit the model (loaded unless strict failed)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    stripped_prefix: str = ""
    ignored: int = 0  # keys under another prefix (e.g. 'distill_loss.' of a Distiller checkpoint)

    @classmethod
    def compare(cls, model: nn.Module, state: dict[str, torch.Tensor], source: str,
                **kwargs: Any) -> LoadReport:
        own = model.state_dict()
        report = cls(source, **kwargs)
        report.missing = [k for k in own if k not in state]
        report.unexpected = [k for k in state if k not in own]
        report.mismatched = [(k, tuple(v.shape), tuple(own[k].shape))
                             for k, v in state.items() if k in own and v.shape != own[k].shape]
        report.matched = sum(k in own for k in state) - len(report.mismatched)
        return report

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"checkpoint {self.source}: {self.matched} tensors fit the model"]
        if self.stripped_prefix:
            lines.append(
                f"  keys were prefixed {self.stripped_prefix!r} (prefix removed; "
                f"{self.ignored} keys under other prefixes ignored)"
            )
        for title, items in (
            ("shape mismatches (checkpoint vs model)",
             [f"{k}: {list(c)} vs {list(m)}" for k, c, m in self.mismatched]),
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
        ):
            if items:
                shown = ", ".join(items[:KEYS_SHOWN])
                more = len(items) - KEYS_SHOWN
                lines.append(
                    f"  {len(items)} {title}: {shown}" + (f" (+{more} more)" if more > 0 else "")
                )
        if self.ok:
            lines.append("  every key matched")
        return "\n".join(lines)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` fits ``model`` key for key."""
    report = LoadReport.compare(model, state, source)
    if report.ok:
        return
    hint = "Use the config the checkpoint was trained with."
    prefixes = {k.split(".", 1)[0] for k in state}
    own = {k.split(".", 1)[0] for k in model.state_dict()}
    if "student" in prefixes and "student" not in own:
        hint = (
            "This is a distillation checkpoint: evaluate it with its distill config, or extract "
            "the student with `bevdistill export DISTILL_CONFIG CHECKPOINT OUT` and evaluate OUT "
            "with the student config."
        )
    elif "student" in own and "student" not in prefixes:
        hint = ("This is a detector checkpoint, not a distillation one: evaluate it with a "
                "train_teacher/train_student config.")
    shapes = [f"{k}: {c} vs {m}" for k, c, m in report.mismatched]
    details = [
        f"{len(report.missing)} missing (e.g. {report.missing[:3]})" if report.missing else "",
        f"{len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]})"
        if report.unexpected else "",
        f"{len(shapes)} shape mismatches (checkpoint vs model, e.g. {shapes[:3]})" if shapes else "",
    ]
    raise CheckpointMismatchError(
        f"checkpoint {source} does not fit {type(model).__name__}: "
        + "; ".join(d for d in details if d) + f". {hint}"
    )


def strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict, str, int]:
    """Remove the key prefix ('module.', 'model.', 'student.', ...) that best fits the model.

    Keeps the keys as they are when they already fit at least as well as any prefixed reading.
    """
    candidates = {""}
    for key in state:
        parts = key.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in (1, 2) if len(parts) > i)

    def fit(prefix: str) -> int:
        return sum(k[len(prefix):] in model_keys for k in state if k.startswith(prefix))

    best = max(sorted(candidates), key=lambda p: (fit(p), p == ""))
    if not best:
        return state, "", 0
    kept = {k[len(best):]: v for k, v in state.items() if k.startswith(best)}
    return kept, best, len(state) - len(kept)


def load_weights(model: nn.Module, checkpoint: Any, strict: bool = True, trusted: bool = False,
                 what: str = "teacher") -> LoadReport:
    """Load ``checkpoint`` (a path or a dict) into ``model``; report missing/unexpected/mis-shaped
    keys.

    ``strict``: any mismatch raises :class:`CheckpointMismatchError` naming the keys (a teacher
    that silently keeps random layers would teach noise). Otherwise the matching tensors are
    loaded and the report is given as a warning. A checkpoint sharing no key with the model
    always raises. A key prefix ('module.', 'student.'...) is removed when that fits better.
    """
    state = read_state_dict(checkpoint, f"{what} checkpoint", trusted=trusted)
    source = str(checkpoint) if not isinstance(checkpoint, dict) else "<dict>"
    state, prefix, ignored = strip_prefix(state, set(model.state_dict()))
    report = LoadReport.compare(model, state, source, stripped_prefix=prefix, ignored=ignored)
    label = f"{type(model).__name__} {what}"
    if not report.matched:
        raise CheckpointMismatchError(
            f"none of the {len(state)} tensors in {source} fits the {label} (first checkpoint "
            f"keys: {list(state)[:5]}, first model keys: {list(model.state_dict())[:5]}): the "
            f"checkpoint does not belong to this {what} config."
        )
    if strict and not report.ok:
        raise CheckpointMismatchError(
            f"the checkpoint does not match the {what} config ({label}):\n{report}\n"
            f"Build the {what} from the config it was trained with"
            + (f", or pass driver=dict(strict_{what}=False) to load only the matching tensors."
               if what == "teacher" else ".")
        )
    bad_shape = {k for k, _, _ in report.mismatched}
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in bad_shape},
                          strict=False)
    if not report.ok:
        warnings.warn(f"{what} loaded partially; layers left as initialised:\n{report}",
                      stacklevel=3)
    return report
