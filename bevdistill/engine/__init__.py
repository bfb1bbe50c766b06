"""Glue between the models and mmengine: evaluation metric, runner, hooks, keyed randomness.

Names resolve lazily (as in :mod:`bevdistill`), so importing the metric does not import the
Runner machinery.
"""

from importlib import import_module

_EXPORTS = {
    "BEVDetectionMetric": "bevdistill.engine.metric",
    "BEVRunner": "bevdistill.engine.runner",
    "ExperimentConfigError": "bevdistill.engine.runner",
    "LaunchError": "bevdistill.engine.runner",
    "build_runner_config": "bevdistill.engine.runner",
    "list_experiments": "bevdistill.engine.runner",
    "load_experiment": "bevdistill.engine.runner",
    "make_runner": "bevdistill.engine.runner",
    "resolve_config": "bevdistill.engine.runner",
    "setup_distributed": "bevdistill.engine.runner",
    "AtomicCheckpointHook": "bevdistill.engine.checkpoint",
    "allow_mmengine_checkpoint_globals": "bevdistill.engine.checkpoint",
    "checkpoint_safe_globals": "bevdistill.engine.checkpoint",
    "KeyedDataset": "bevdistill.engine.randomness",
    "KeyedInfiniteSampler": "bevdistill.engine.randomness",
    "RNGStateHook": "bevdistill.engine.randomness",
    "FastForwardIterBasedTrainLoop": "bevdistill.engine.randomness",
    "ProgressBarHook": "bevdistill.engine.hooks",
    "LastMetricsHook": "bevdistill.engine.hooks",
    "RankWeightsHook": "bevdistill.engine.hooks",
    "CrashHook": "bevdistill.engine.hooks",
    "DivergenceHook": "bevdistill.engine.hooks",
    "DivergenceError": "bevdistill.engine.hooks",
    "file_sha256": "bevdistill.engine.checkpoint",
    "verify_sha256": "bevdistill.engine.checkpoint",
    "evaluate_checkpoint": "bevdistill.engine.evaluate",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bevdistill.engine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
