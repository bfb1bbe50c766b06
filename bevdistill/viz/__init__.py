"""Pictures for the notebooks and the book: BEV scenes, hooked features, attention maps.

* :mod:`bevdistill.viz.bev`: point clouds from above with ground-truth and predicted boxes;
* :mod:`bevdistill.viz.features`: channel grids, mean/max over channels per layer, teacher vs
  student attention maps and their difference;
* :mod:`bevdistill.viz.feature_cache`: hooked features of one forward, and a per-scene cache;
* :mod:`bevdistill.viz.analysis`: the measurements behind the pictures (occupancy, the
  response to empty space, checkerboards, attention shares and gradients, temperature sweeps);
* :mod:`bevdistill.viz.ratios`: gradient ratios of loss terms as log-scale bars and curves;
* :mod:`bevdistill.viz.expected`: an exercise's expected output on a fixed input, beside the
  learner's;
* :mod:`bevdistill.viz.fusion`: a camera + LiDAR model's six images, one ray's depth
  distribution, and its camera, LiDAR and fused BEV maps;
* :mod:`bevdistill.viz.pipeline`: the distillation pipeline in one diagram;
* :mod:`bevdistill.viz.widgets`: ipywidgets explorers (scene, layer, channel) for JupyterLab;
* :mod:`bevdistill.viz.results`: benchmark JSONs as tables (the package reads result files and
  never imports the benchmarks);
* :mod:`bevdistill.viz.gain`: the distillation benchmark's gain as tables, curves and bars;
* :mod:`bevdistill.viz.findings`: the Results chapter's numbers by name, the summary schema
  check and the goal's status.

Plotting needs matplotlib and the explorers ipywidgets (``pip install 'bevdistill[lab]'``).
Names resolve lazily, so ``import bevdistill.viz`` imports neither.
"""

from importlib import import_module

_EXPORTS = {
    # BEV scenes and boxes
    "CLASS_COLOURS": "bevdistill.viz.bev",
    "bev_extent": "bevdistill.viz.bev",
    "box_footprints": "bevdistill.viz.bev",
    "draw_boxes": "bevdistill.viz.bev",
    "plot_points": "bevdistill.viz.bev",
    "plot_bev": "bevdistill.viz.bev",
    "plot_sample": "bevdistill.viz.bev",
    "plot_detections": "bevdistill.viz.bev",
    "count_found": "bevdistill.viz.bev",
    "found_mask": "bevdistill.viz.bev",
    # features and attention
    "feature_map": "bevdistill.viz.features",
    "channel_summary": "bevdistill.viz.features",
    "active_channels": "bevdistill.viz.features",
    "attention_maps": "bevdistill.viz.features",
    "plot_bev_map": "bevdistill.viz.features",
    "plot_channel_grid": "bevdistill.viz.features",
    "plot_layer_summaries": "bevdistill.viz.features",
    "plot_attention_comparison": "bevdistill.viz.features",
    "cell_of": "bevdistill.viz.features",
    "similarity_map": "bevdistill.viz.features",
    "plot_similarity": "bevdistill.viz.features",
    "capture": "bevdistill.viz.feature_cache",
    "FeatureCache": "bevdistill.viz.feature_cache",
    "SceneCapture": "bevdistill.viz.feature_cache",
    # measurements behind the pictures
    "occupancy": "bevdistill.viz.analysis",
    "box_mask": "bevdistill.viz.analysis",
    "empty_input_response": "bevdistill.viz.analysis",
    "parity_means": "bevdistill.viz.analysis",
    "attention_shares": "bevdistill.viz.analysis",
    "attention_gradient_map": "bevdistill.viz.analysis",
    "temperature_sweep": "bevdistill.viz.analysis",
    # JupyterLab explorers
    "scene_explorer": "bevdistill.viz.widgets",
    "feature_explorer": "bevdistill.viz.widgets",
    "attention_explorer": "bevdistill.viz.widgets",
    "similarity_explorer": "bevdistill.viz.widgets",
    # how hard loss terms pull
    "plot_ratio_bars": "bevdistill.viz.ratios",
    "plot_attention_magnitude": "bevdistill.viz.ratios",
    # an exercise's expected output beside the learner's
    "expected_output": "bevdistill.viz.expected",
    # camera + LiDAR fusion: the six images, one ray's depth, the three BEV maps
    "FUSION_HOOK_POINTS": "bevdistill.viz.fusion",
    "wrapper_at": "bevdistill.viz.fusion",
    "capture_fusion": "bevdistill.viz.fusion",
    "plot_cameras": "bevdistill.viz.fusion",
    "pick_ray": "bevdistill.viz.fusion",
    "ray_depth": "bevdistill.viz.fusion",
    "plot_ray_depth": "bevdistill.viz.fusion",
    "plot_fusion_maps": "bevdistill.viz.fusion",
    # the whole pipeline in one picture
    "draw_pipeline": "bevdistill.viz.pipeline",
    # benchmark results
    "list_benchmarks": "bevdistill.viz.results",
    "load_benchmark": "bevdistill.viz.results",
    "benchmark_markdown": "bevdistill.viz.results",
    "markdown_table": "bevdistill.viz.results",
    "show_benchmark": "bevdistill.viz.results",
    # what distillation bought (distill_gain.json)
    "gain_table": "bevdistill.viz.gain",
    "best_option": "bevdistill.viz.gain",
    "run_label": "bevdistill.viz.gain",
    "typical_scene": "bevdistill.viz.gain",
    "TYPICAL_RULE": "bevdistill.viz.gain",
    "portable_command": "bevdistill.engine.report",
    "gap_by_class": "bevdistill.viz.gain",
    "plot_gain_curves": "bevdistill.viz.gain",
    "plot_class_bars": "bevdistill.viz.gain",
    "plot_fair_class_bars": "bevdistill.viz.gain",
    "plot_teacher_schedule": "bevdistill.viz.gain",
    "scenario_rows": "bevdistill.viz.gain",
    "show_gain": "bevdistill.viz.gain",
    "found_by_points": "bevdistill.viz.gain",
    "side_by_side": "bevdistill.viz.gain",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bevdistill.viz' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
