"""The whole distillation pipeline in one picture: teacher and student, the hooked layers, the
projectors and the three losses, each by the name it has in the code.

Drawn by the package (not a committed image), so the notebook and the book show the same
figure and it cannot drift from the names: ``tests/test_viz_pipeline.py`` reads them back.
"""

from __future__ import annotations

from itertools import pairwise

from bevdistill.viz._deps import pyplot

# The layers of one detector, left to right: (attribute, hooked by the distiller?).
LIDAR_LAYERS = (
    ("pts_voxel_encoder", False),
    ("pts_middle_encoder", True),
    ("pts_backbone", True),
    ("pts_neck", True),
    ("bbox_head.heatmap_head", True),
)
FEATURE_HOOKS = ("pts_middle_encoder", "pts_backbone", "pts_neck")
CAMERA_HOOKS = ("view_transform", "fusion_layer")  # a camera + LiDAR teacher only
LOSSES = ("loss_at", "loss_crd", "loss_kd")
PROJECTORS = ("ProjectionMLP", "SpatialProjector")

_TEACHER, _STUDENT, _LOSS, _PROJ, _HOOK = "#dbe9f6", "#e3f1df", "#fde2cf", "#efe4f5", "#c0392b"
_Y_TEACHER, _Y_CAMERA, _Y_STUDENT = 6.6, 8.2, 0.6
_ROW = ("points", "pts_voxel_encoder", "pts_middle_encoder", "fusion_layer", "pts_backbone",
        "pts_neck", "bbox_head.heatmap_head")


def _width(text: str) -> float:
    """A box wide enough for its longest line of 7.5 pt monospace."""
    return 0.125 * max(len(line) for line in text.splitlines()) + 0.35


def _positions(gap: float = 0.45) -> dict[str, float]:
    x, centres = 0.0, {}
    for name in _ROW:
        centres[name] = x + _width(name) / 2
        x += _width(name) + gap
    return centres


_X = _positions()


def _box(ax, x, y, text, colour, *, width=None, height=0.75, hooked=0, style="solid"):
    """A rounded box; ``hooked`` = -1 or 1 puts the hook's red dot on its bottom or top edge."""
    from matplotlib.patches import FancyBboxPatch

    width = _width(text) if width is None else width
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.04,rounding_size=0.12", fc=colour,
                                ec=_HOOK if hooked else "#555555", lw=2.0 if hooked else 1.0,
                                ls=style))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5, family="monospace")
    if hooked:  # the hook: a red dot on the edge that faces the losses
        ax.plot([x], [y + hooked * height / 2], marker="o", ms=6, color=_HOOK, zorder=5)


def _arrow(ax, start, end, *, colour="#444444", style="-|>", ls="solid", text=None):
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": style, "color": colour, "lw": 1.1, "ls": ls,
                            "shrinkA": 2, "shrinkB": 2})
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, fontsize=6.5,
                ha="center", va="bottom", color=colour)


def _grid_icon(ax, x, y, size, cells, colour, label):
    """A BEV map as a small square grid: the teacher's finer than the student's."""
    step = size / cells
    for i in range(cells + 1):
        ax.plot([x, x + size], [y + i * step] * 2, color=colour, lw=0.6)
        ax.plot([x + i * step] * 2, [y, y + size], color=colour, lw=0.6)
    ax.text(x + size + 0.12, y + size / 2, label, fontsize=7, va="center")


def _detector_row(ax, y, who, colour, *, fusion, facing):
    """One detector, left to right; ``facing`` is the side of the losses (-1 below, 1 above)."""
    names = ["points", *(n for n, _ in LIDAR_LAYERS)]
    if fusion:
        names.insert(names.index("pts_backbone"), "fusion_layer")
    hooked = {n for n, h in LIDAR_LAYERS if h} | ({"fusion_layer"} if fusion else set())
    for previous, name in pairwise(names):
        _arrow(ax, (_X[previous] + _width(previous) / 2, y), (_X[name] - _width(name) / 2, y))
    for name in names:
        _box(ax, _X[name], y, name, "white" if name == "points" else colour,
             hooked=facing if name in hooked else 0)
    ax.text(_X["points"] - 0.5, y + 0.62, who, fontsize=9, weight="bold", ha="left")


def _plus(ax, left, right, y):
    ax.text((left + right) / 2, y, "+", fontsize=14, ha="center", va="center")


def draw_pipeline(ax=None, *, camera: bool = True):
    """Draw teacher (top) and student (bottom), the hook points (red), the projectors and the
    losses between them; ``camera=True`` adds the camera branch of a camera + LiDAR teacher
    (``view_transform`` and ``fusion_layer``, dashed). Returns the figure."""
    plt = pyplot()
    right = _X["bbox_head.heatmap_head"] + _width("bbox_head.heatmap_head") / 2
    if ax is None:
        _, ax = plt.subplots(figsize=(14, 7.2 if camera else 6.2))
    ax.set_xlim(-0.6, right + 3.4)
    ax.set_ylim(-0.9, 9.0 if camera else 7.6)
    ax.axis("off")
    mid = (_Y_TEACHER + _Y_STUDENT) / 2

    _detector_row(ax, _Y_TEACHER, "teacher: frozen, eval mode, no_grad", _TEACHER,
                  fusion=camera, facing=-1)
    _detector_row(ax, _Y_STUDENT, "student: trained", _STUDENT, fusion=False, facing=1)
    if camera:
        cam_x = _X["pts_middle_encoder"]
        _box(ax, _X["points"], _Y_CAMERA, "images", "white", style="dashed")
        _box(ax, cam_x, _Y_CAMERA, "view_transform", _TEACHER, hooked=1, style="dashed")
        _arrow(ax, (_X["points"] + _width("images") / 2, _Y_CAMERA),
               (cam_x - _width("view_transform") / 2, _Y_CAMERA), ls="dashed",
               text="img_backbone, img_neck")
        _arrow(ax, (cam_x + _width("view_transform") / 2, _Y_CAMERA),
               (_X["fusion_layer"], _Y_TEACHER + 0.38), ls="dashed")
        ax.text(_X["fusion_layer"] + 0.6, _Y_CAMERA, "camera + LiDAR teacher only: camera BEV "
                "map (view_transform)\nand fused BEV map (fusion_layer); a LiDAR-only teacher "
                "has neither", fontsize=6.5, style="italic", va="center")

    # The hooked BEV maps of each side, gathered on one line (the recorder's dict of maps).
    left, end = _X["pts_middle_encoder"], _X["pts_neck"]
    for y, sign, colour in ((_Y_TEACHER, -1, "#2c6fad"), (_Y_STUDENT, 1, "#3b8a3b")):
        bus = y + sign * 1.0
        ax.plot([left, end], [bus, bus], color=colour, lw=2.2)
        for name in FEATURE_HOOKS + (("fusion_layer",) if camera and sign < 0 else ()):
            ax.plot([_X[name]] * 2, [y + sign * 0.38, bus], color=colour, lw=1.2, ls=":")
    _grid_icon(ax, _X["points"] - 0.4, _Y_TEACHER - 1.9, 0.8, 8, "#2c6fad",
               "teacher BEV maps\n[B, C_t, H_t, W_t]")
    _grid_icon(ax, _X["points"] - 0.4, _Y_STUDENT + 1.1, 0.8, 4, "#3b8a3b",
               "student BEV maps\n[B, C_s, H_s, W_s]")

    # Attention transfer compares the raw maps: an attention map has no channel axis.
    at_x = left + 0.4
    _box(ax, at_x, mid, "loss_at.<layer>\nAttentionTransferLoss", _LOSS, height=0.9)
    _arrow(ax, (at_x, _Y_TEACHER - 1.0), (at_x, mid + 0.47))
    _arrow(ax, (at_x, _Y_STUDENT + 1.0), (at_x, mid - 0.47))
    ax.text(at_x - 0.15, mid + 1.0, "attention maps,\narea-pooled to\nthe smaller grid",
            fontsize=6.5, ha="right")

    # Contrastive: each side through its own projector into one shared space.
    crd_x = (_X["pts_backbone"] + end) / 2
    for y, side in ((mid + 1.4, "teacher"), (mid - 1.4, "student")):
        _box(ax, crd_x, y, f"ProjectionMLP or\nSpatialProjector ({side})", _PROJ, height=0.8)
    _arrow(ax, (crd_x, _Y_TEACHER - 1.0), (crd_x, mid + 1.82))
    _arrow(ax, (crd_x, _Y_STUDENT + 1.0), (crd_x, mid - 1.82))
    _box(ax, crd_x, mid, "loss_crd.<layer>\nContrastiveLoss or\nSpatialContrastiveLoss", _LOSS,
         height=1.05)
    _arrow(ax, (crd_x, mid + 1.0), (crd_x, mid + 0.55))
    _arrow(ax, (crd_x, mid - 1.0), (crd_x, mid - 0.55))
    ax.text(at_x + 0.25, mid + 1.6, "per hooked layer:\none loss_at and\none loss_crd term",
            fontsize=6.5, va="top")

    # Response distillation of the class heatmaps.
    kd_x = _X["bbox_head.heatmap_head"]
    _box(ax, kd_x, mid, "loss_kd.heatmap\nHeatmapDistillationLoss", _LOSS, height=0.9)
    _arrow(ax, (kd_x, _Y_TEACHER - 0.38), (kd_x, mid + 0.47))
    _arrow(ax, (kd_x, _Y_STUDENT + 0.38), (kd_x, mid - 0.47))

    # What mmengine back-propagates: the sum of the dict.
    sum_x = right + 1.7
    _box(ax, sum_x, mid, "loss dict\n-> optimiser\n(student and\nprojectors)", "white",
         height=1.5)
    _plus(ax, at_x + _width("AttentionTransferLoss") / 2,
          crd_x - _width("SpatialContrastiveLoss") / 2, mid)
    _plus(ax, crd_x + _width("SpatialContrastiveLoss") / 2,
          kd_x - _width("HeatmapDistillationLoss") / 2, mid)
    _arrow(ax, (kd_x + _width("HeatmapDistillationLoss") / 2, mid),
           (sum_x - _width("(student and") / 2, mid))
    ax.plot([right, sum_x], [_Y_STUDENT, _Y_STUDENT], color="#444444", lw=1.1)
    _arrow(ax, (sum_x, _Y_STUDENT), (sum_x, mid - 0.78))
    ax.text(sum_x, _Y_STUDENT - 0.25, "+ the student's own\ndetection losses", fontsize=6.5,
            ha="center", va="top")
    ax.text(at_x, -0.55, "each term weighted: alpha_crd, alpha_at, alpha_kd (notebook 5)",
            fontsize=6.5)
    ax.plot([], [], marker="o", ls="", color=_HOOK, label="hook point (a forward hook)")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return ax.figure
