"""The teacher's weights: read from its checkpoint, and optionally the student's starting point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from bevdistill.engine.checkpoint import CheckpointError
from bevdistill.probe import DistillerBuildError

STUDENT_INITS = (None, "teacher")  # the values of Distiller(student_init=...)


class TeacherCheckpointError(CheckpointError):
    """The teacher's checkpoint cannot be used (the cause, a :class:`CheckpointError`, chained)."""


def load_teacher_checkpoint(model: nn.Module, checkpoint: Any, strict: bool = True,
                            trusted: bool = False):
    """The teacher's weights, checked against a shipped model card's SHA-256 when it has one."""
    from bevdistill.engine.weights import load_weights

    if isinstance(checkpoint, (str, os.PathLike)):
        from bevdistill.engine.checkpoint import verify_shipped_weights

        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"teacher checkpoint {str(path)!r} does not exist")
        verify_shipped_weights(path)
        checkpoint = path
    try:
        return load_weights(model, checkpoint, strict=strict, trusted=trusted, what="teacher")
    except CheckpointError as exc:
        raise TeacherCheckpointError(str(exc)) from exc


def copy_teacher_into_student(teacher: nn.Module, student: nn.Module) -> None:
    """Start the student from the teacher's weights (teacher-guided initialisation): only for a
    student of the teacher's network, whose teacher differs by what it saw or how long it
    trained."""
    from bevdistill.engine.weights import LoadReport

    state = teacher.state_dict()
    report = LoadReport.compare(student, state, "the teacher's weights")
    if not report.ok:
        raise DistillerBuildError(
            "student_init='teacher' needs a student of the teacher's network, and this one "
            f"differs:\n{report}\nUse student_init=None for a student of another architecture."
        )
    student.load_state_dict(state)
