"""Score a checkpoint on an experiment's validation data.

One function for ``bevdistill evaluate`` and for :mod:`bevdistill.pretrained` (which scores the
shipped teacher's validation subset and sits below the CLI, so it must not call it).
"""

from __future__ import annotations

import os

from mmengine.config import Config


def evaluate_checkpoint(exp: Config, checkpoint: str | os.PathLike, work_dir: str | os.PathLike,
                        launcher: str = "none") -> dict[str, float]:
    """Validation metrics of ``checkpoint`` loaded strictly into ``exp``'s model.

    The checkpoint is read before any model is built, so a bad file fails at once. A distill
    experiment is scored by its student: the teacher's weights are not loaded.
    """
    from mmengine.model import is_model_wrapper

    from bevdistill.engine.checkpoint import read_state_dict
    from bevdistill.engine.runner import make_runner
    from bevdistill.engine.weights import check_state_dict

    state = read_state_dict(checkpoint)
    if exp.role == "distill":
        exp.model.teacher_ckpt = None  # predictions come from the student alone
    runner = make_runner(exp, work_dir, launcher=launcher, train=False)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    check_state_dict(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    return runner.val()
