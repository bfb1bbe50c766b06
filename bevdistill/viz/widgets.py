"""ipywidgets explorers for JupyterLab: pick a scene, a layer, a channel, and see it.

Each explorer is an :class:`Explorer`: a row of controls and an output area. Displaying it
(the last expression of a cell) draws the current selection; moving a control redraws. The
drawing itself is :meth:`Explorer.render`, a plain function of the control values that returns
a matplotlib figure, so it runs (and is tested) without a browser. Executed headless (nbmake,
the book build) an explorer draws once and costs one forward per model.

ipywidgets is imported only when an explorer is built, so the rest of :mod:`bevdistill.viz`
works without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from bevdistill.capture import DEFAULT_HOOK_POINTS
from bevdistill.viz._deps import ipywidgets, pyplot
from bevdistill.viz.bev import bev_extent, plot_bev, plot_detections, to_numpy
from bevdistill.viz.feature_cache import FeatureCache
from bevdistill.viz.features import (
    feature_map,
    plot_attention_comparison,
    plot_bev_map,
    plot_similarity,
)

VIEWS = ("channel", "mean", "max")


class Explorer:
    """Controls plus an output area that shows ``draw(**values)`` for the current values."""

    def __init__(self, controls: Mapping[str, Any], draw: Callable[..., Any]):
        widgets = ipywidgets()
        self.controls = dict(controls)
        self._draw = draw
        self.output = widgets.Output()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())), self.output])
        self.renders = 0

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def render(self):
        """The figure for the current control values (not displayed)."""
        self.renders += 1
        return self._draw(**self.values())

    def refresh(self) -> None:
        """Redraw into the output area."""
        from IPython.display import clear_output, display

        plt = pyplot()
        with self.output:
            clear_output(wait=True)
            fig = self.render()
            display(fig)
            plt.close(fig)

    def _on_change(self, change: dict) -> None:
        self.refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self.refresh()
        display(self.widget)


def _extent(dataset: Any, extent: Sequence[float] | None) -> tuple[float, ...] | None:
    if extent is not None:
        return tuple(extent)
    pcr = getattr(dataset, "point_cloud_range", None)
    return bev_extent(pcr) if pcr is not None else None


def _as_cache(model: nn.Module | FeatureCache, dataset: Any, hook_points: Sequence[str],
              select: Mapping[str, int] | None) -> FeatureCache:
    if isinstance(model, FeatureCache):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model (nn.Module) or a FeatureCache, got {type(model).__name__}")
    return FeatureCache(model, dataset, hook_points, select=select)


def _scene_slider(n: int, description: str = "scene"):
    if n < 1:
        raise ValueError("the dataset is empty: an explorer needs at least one scene")
    return ipywidgets().IntSlider(value=0, min=0, max=n - 1, description=description,
                                  continuous_update=False)


def scene_explorer(
    dataset: Any,
    models: Mapping[str, nn.Module | FeatureCache] | None = None,
    *,
    score_threshold: float = 0.3,
    extent: Sequence[float] | None = None,
) -> Explorer:
    """Scenes of ``dataset`` from above with their boxes, and each model's detections.

    ``models``: ``{'teacher': teacher, ...}`` (models or :class:`FeatureCache` objects sharing
    ``dataset``); one panel per model. Controls: scene, score threshold.
    """
    widgets = ipywidgets()
    caches = {name: _as_cache(m, dataset, (), None) for name, m in (models or {}).items()}
    pcr = getattr(dataset, "point_cloud_range", None)

    def draw(scene: int, threshold: float):
        item = dataset[scene]
        points, sample = item["inputs"]["points"], item["data_samples"]
        if caches:
            preds = {name: cache(scene).predictions for name, cache in caches.items()}
            return plot_detections(points, sample["gt_boxes"], sample["gt_labels"], preds,
                                   score_threshold=threshold, point_cloud_range=pcr)
        ax = plot_bev(points, sample["gt_boxes"], sample["gt_labels"], point_cloud_range=pcr,
                      title=f"scene {scene}: {len(to_numpy(sample['gt_boxes']))} labelled objects")
        return ax.figure

    controls = {
        "scene": _scene_slider(len(dataset)),
        "threshold": widgets.FloatSlider(value=score_threshold, min=0.05, max=0.95, step=0.05,
                                         description="score ≥", continuous_update=False),
    }
    return Explorer(controls, draw)


def feature_explorer(
    model: nn.Module | FeatureCache,
    dataset: Any,
    *,
    hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
    select: Mapping[str, int] | None = None,
    extent: Sequence[float] | None = None,
    boxes: bool = True,
) -> Explorer:
    """One hooked layer of one scene: a single channel, or the mean / max over channels.

    Controls: scene, layer, view (channel / mean / max), channel (its range follows the layer's
    channel count). Ground-truth boxes are drawn on top unless ``boxes=False``.
    """
    widgets = ipywidgets()
    cache = _as_cache(model, dataset, hook_points, select)
    layers = list(cache.hook_points)
    extent = _extent(dataset, extent)

    def channels_of(scene: int, layer: str) -> int:
        return feature_map(cache(scene).features[layer], cache.select.get(layer, -1)).shape[1]

    def draw(scene: int, layer: str, view: str, channel: int):
        plt = pyplot()
        capture = cache(scene)
        fmap = feature_map(capture.features[layer], cache.select.get(layer, -1), what=layer)[0]
        if view == "channel":
            values, what = fmap[min(channel, fmap.shape[0] - 1)], f"channel {channel}"
        elif view == "mean":
            values, what = fmap.mean(dim=0), "mean over channels"
        else:
            values, what = fmap.amax(dim=0), "max over channels"
        sample = capture.item["data_samples"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        plot_bev_map(ax, values, extent, title=f"scene {scene} · {layer} {list(fmap.shape)} · {what}",
                     boxes=sample["gt_boxes"] if boxes else None, labels=sample["gt_labels"],
                     cmap="viridis")
        return fig

    controls = {
        "scene": _scene_slider(len(dataset)),
        "layer": widgets.Dropdown(options=layers, value=layers[0], description="layer"),
        "view": widgets.ToggleButtons(options=list(VIEWS), value="mean", description="view"),
        "channel": widgets.IntSlider(value=0, min=0, max=channels_of(0, layers[0]) - 1,
                                     description="channel", continuous_update=False),
    }

    def follow_layer(change: dict) -> None:  # registered before the redraw observer fires
        controls["channel"].max = channels_of(controls["scene"].value, change["new"]) - 1

    controls["layer"].observe(follow_layer, names="value")
    return Explorer(controls, draw)


def attention_explorer(
    student: nn.Module | FeatureCache,
    teacher: nn.Module | FeatureCache,
    dataset: Any,
    *,
    hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
    select: Mapping[str, int] | None = None,
    extent: Sequence[float] | None = None,
) -> Explorer:
    """Teacher | student | difference attention maps of one layer of one scene.

    Controls: scene, layer. Both models see the same scene; the maps are compared on the
    smaller of the two grids, exactly as :class:`~bevdistill.AttentionTransferLoss` does.
    """
    widgets = ipywidgets()
    s_cache = _as_cache(student, dataset, hook_points, select)
    t_cache = _as_cache(teacher, dataset, hook_points, select)
    layers = [n for n in s_cache.hook_points if n in t_cache.hook_points]
    if not layers:
        raise ValueError(
            f"student and teacher share no hook point (student {s_cache.hook_points}, teacher "
            f"{t_cache.hook_points})"
        )
    extent = _extent(dataset, extent)

    def draw(scene: int, layer: str):
        s, t = s_cache(scene), t_cache(scene)
        sample = s.item["data_samples"]
        return plot_attention_comparison(
            feature_map(s.features[layer], s_cache.select.get(layer, -1)),
            feature_map(t.features[layer], t_cache.select.get(layer, -1)),
            extent=extent, boxes=sample["gt_boxes"], labels=sample["gt_labels"], layer=layer,
        )

    controls = {
        "scene": _scene_slider(len(dataset)),
        "layer": widgets.Dropdown(options=layers, value=layers[-1], description="layer"),
    }
    return Explorer(controls, draw)


def similarity_explorer(
    model: nn.Module | FeatureCache,
    dataset: Any,
    *,
    hook_points: Sequence[str] = DEFAULT_HOOK_POINTS,
    select: Mapping[str, int] | None = None,
    extent: Sequence[float] | None = None,
) -> Explorer:
    """Which cells does a layer represent like the centre of a chosen object?

    Controls: scene, layer, object (a labelled box of the scene; its range follows the scene).
    Shows the cosine similarity of every cell's feature vector to the object's centre cell.
    """
    widgets = ipywidgets()
    cache = _as_cache(model, dataset, hook_points, select)
    layers = list(cache.hook_points)
    extent = _extent(dataset, extent)
    if extent is None:
        raise ValueError("similarity_explorer needs the map's extent: pass extent=(x0, x1, y0, y1)")

    def boxes_of(scene: int):
        return to_numpy(cache(scene).item["data_samples"]["gt_boxes"])

    def draw(scene: int, layer: str, obj: int):
        plt = pyplot()
        capture = cache(scene)
        boxes = boxes_of(scene)
        sample = capture.item["data_samples"]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        if not len(boxes):
            ax.set_title(f"scene {scene} has no labelled object")
            return fig
        box = boxes[min(obj, len(boxes) - 1)]
        fmap = feature_map(capture.features[layer], cache.select.get(layer, -1), what=layer)
        plot_similarity(ax, fmap, box[:2], extent, boxes=boxes, labels=sample["gt_labels"],
                        title=f"scene {scene} · {layer}: cosine similarity to object {obj}")
        return fig

    controls = {
        "scene": _scene_slider(len(dataset)),
        "layer": widgets.Dropdown(options=layers, value=layers[-1], description="layer"),
        "obj": widgets.IntSlider(value=0, min=0, max=max(len(boxes_of(0)) - 1, 0),
                                 description="object", continuous_update=False),
    }

    def follow_scene(change: dict) -> None:
        controls["obj"].max = max(len(boxes_of(change["new"])) - 1, 0)

    controls["scene"].observe(follow_scene, names="value")
    return Explorer(controls, draw)
