"""The combined distillation loss (step 5): keys, weights, errors, fp32, gradients, end to end."""

from __future__ import annotations

import pytest
import torch
from warnings_support import reset_warnings

from bevdistill import (
    AttentionTransferLoss,
    BEVFusionDistillationLoss,
    HeatmapDistillationLoss,
    ProjectionMLP,
    SpatialProjector,
)
from bevdistill.losses.combined import MissingFeatureError
from bevdistill.models.tiny import TinyBEVDetector, random_batch

# Several tests call the loss without head outputs on purpose; the warning is tested on its own.
pytestmark = pytest.mark.filterwarnings("ignore:BEVFusionDistillationLoss. alpha_kd > 0")

S_CH = {"pts_middle_encoder": 5, "pts_neck": 16}
T_CH = {"pts_middle_encoder": 5, "pts_neck": 32}


def feats(channels, grid, batch=4, seed=0, grad=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, c, *grid, generator=g, dtype=dtype).requires_grad_(grad)
        for k, c in channels.items()
    }


def heads(batch=4, grid=(16, 16), seed=5, grad=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, 3, *grid, generator=g).requires_grad_(grad)
    t = (torch.randn(batch, 3, *grid, generator=g) - 2).requires_grad_(grad)
    return s, t


def build(**kw):
    torch.manual_seed(0)
    return BEVFusionDistillationLoss(dict(S_CH), dict(T_CH), **kw)


def run(loss, batch=4, seed=0, outputs=True, **kw):
    s, t = feats(S_CH, (16, 16), batch, seed), feats(T_CH, (32, 32), batch, seed + 1)
    if outputs:
        return loss(s, t, *heads(batch), **kw)
    return loss(s, t, **kw)


# --- keys and weights ----------------------------------------------------------------------


def test_one_key_per_layer_and_term_all_containing_loss():
    out = run(build())
    assert sorted(out) == sorted(
        [f"loss_{term}.{layer}" for term in ("crd", "at") for layer in S_CH] + ["loss_kd.heatmap"]
    )
    assert all("loss" in k and v.dim() == 0 and torch.isfinite(v) for k, v in out.items())


def test_dotted_layer_names_get_module_safe_projector_keys():
    ch = {"bbox_head.heatmap_head": 3}
    loss = BEVFusionDistillationLoss(ch, ch, alpha_kd=0.0)
    assert "bbox_head__heatmap_head" in loss.projectors_s
    out = loss(feats(ch, (8, 8)), feats(ch, (8, 8), seed=1))
    assert set(out) == {"loss_crd.bbox_head.heatmap_head", "loss_at.bbox_head.heatmap_head"}


def test_attention_terms_equal_alpha_times_attention_transfer():
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32), seed=1)
    out = build(alpha_at=0.7, alpha_kd=0.0, layer_weights={"pts_neck": 2.0})(s, t)
    at = AttentionTransferLoss()
    torch.testing.assert_close(out["loss_at.pts_neck"], 1.4 * at(s["pts_neck"], t["pts_neck"]))
    torch.testing.assert_close(
        out["loss_at.pts_middle_encoder"],
        0.7 * at(s["pts_middle_encoder"], t["pts_middle_encoder"]),
    )


def test_alphas_scale_terms_linearly():
    a = run(build(alpha_crd=1.0, alpha_at=0.5, alpha_kd=0.5).eval())
    b = run(build(alpha_crd=3.0, alpha_at=1.0, alpha_kd=2.0).eval())
    for key in a:
        ratio = {"crd": 3.0, "at": 2.0, "kd": 4.0}[key.split(".")[0][5:]]
        torch.testing.assert_close(b[key], ratio * a[key])


def test_zero_weights_skip_terms_and_projectors():
    loss = build(alpha_crd=0.0, alpha_kd=0.0)
    assert len(loss.projectors_s) == 0 and sum(p.numel() for p in loss.parameters()) == 0
    assert sorted(run(loss)) == ["loss_at.pts_middle_encoder", "loss_at.pts_neck"]
    loss = build(layer_weights={"pts_middle_encoder": 0.0})
    assert list(loss.projectors_s) == ["pts_neck"]
    assert not any("pts_middle_encoder" in k for k in run(loss))
    assert not any("crd" in k for k in run(build(contrastive="none")))


def test_bad_construction_raises():
    with pytest.raises(ValueError, match=r"same layers.*student \['a'\] and teacher \['b'\]"):
        BEVFusionDistillationLoss({"a": 4}, {"b": 4})
    with pytest.raises(ValueError, match="unknown layers"):
        build(layer_weights={"pts_nek": 1.0})
    with pytest.raises(ValueError, match="alpha_at"):
        build(alpha_at=-1)
    with pytest.raises(ValueError, match="positive int"):
        BEVFusionDistillationLoss({"a": 0}, {"a": 4})
    with pytest.raises(ValueError, match="contrastive"):
        build(contrastive="memory")
    with pytest.raises(TypeError, match="dict layer name"):
        BEVFusionDistillationLoss([("a", 4)], {"a": 4})


# --- errors at the first bad call (the tutorial printed and skipped) -------------------------


def test_missing_layer_raises_naming_it_and_prints_nothing(capsys):
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32))
    del s["pts_neck"]
    with pytest.raises(
        MissingFeatureError, match=r"no 'pts_neck' \(present: \['pts_middle_encoder'\]\)"
    ):
        build()(s, t)
    assert isinstance(MissingFeatureError("x"), KeyError)
    assert capsys.readouterr().out == ""


def test_wrong_channel_count_says_expected_and_got():
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32))
    t["pts_neck"] = torch.randn(4, 48, 32, 32)
    with pytest.raises(ValueError, match=r"has 48 channels.*teacher_channels\['pts_neck'\]=32"):
        build()(s, t)


def test_batch_mismatch_ndim_dtype_and_type_errors():
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32), batch=3)
    with pytest.raises(ValueError, match="batch size 4 differs from the teacher's 3"):
        build()(s, t)
    t = feats(T_CH, (32, 32))
    bad = dict(s, pts_neck=torch.randn(4, 16, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="expected"):
        build()(bad, t)
    with pytest.raises(TypeError, match="float tensor"):
        build()(dict(s, pts_neck=torch.ones(4, 16, 16, 16, dtype=torch.long)), t)
    with pytest.raises(TypeError, match="must be a dict"):
        build()(list(s.values()), t)


def test_single_element_list_is_unwrapped_multi_element_tuple_is_an_error():
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32))
    loss = build().eval()
    base = loss(s, t)
    wrapped = loss(dict(s, pts_neck=[s["pts_neck"]]), dict(t, pts_neck=(t["pts_neck"],)))
    for key in base:
        torch.testing.assert_close(wrapped[key], base[key])
    scales = (torch.randn(4, 16, 16, 16), torch.randn(4, 16, 8, 8))
    with pytest.raises(
        ValueError, match=r"'pts_neck'.*2 elements.*\(4, 16, 8, 8\).*select=\{'pts_neck': -1\}"
    ):
        loss(dict(s, pts_neck=scales), t)


# --- response distillation (the tutorial's unused alpha_kd) ---------------------------------


def test_kd_term_is_alpha_kd_times_heatmap_distillation():
    s_out, t_out = heads()
    out = build(alpha_kd=0.25)(
        feats(S_CH, (16, 16)), feats(T_CH, (32, 32)), {"heatmap": s_out}, [t_out]
    )
    torch.testing.assert_close(
        out["loss_kd.heatmap"], 0.25 * HeatmapDistillationLoss()(s_out, t_out)
    )


def test_missing_outputs_warn_once_or_raise_when_required():
    reset_warnings()
    with pytest.warns(UserWarning, match="no response-distillation term"):
        out = run(build(), outputs=False)
    assert not any("kd" in k for k in out)
    with pytest.raises(ValueError, match="require_outputs"):
        run(build(require_outputs=True), outputs=False)
    s_out, _ = heads()
    with pytest.raises(ValueError, match="only student_outputs"):
        build()(feats(S_CH, (16, 16)), feats(T_CH, (32, 32)), s_out, None)
    reset_warnings()


# --- gradients and precision -----------------------------------------------------------------


def test_teacher_detached_and_gradients_reach_student_and_both_projectors():
    s, t = feats(S_CH, (16, 16), grad=True), feats(T_CH, (32, 32), seed=1, grad=True)
    s_out, t_out = heads(grad=True)
    loss = build()
    sum(loss(s, t, s_out, t_out).values()).backward()
    assert all(x.grad is None for x in [*t.values(), t_out])
    assert all(x.grad.abs().max() > 0 for x in [*s.values(), s_out])
    for side in (loss.projectors_s, loss.projectors_t):
        assert all(p.grad is not None and p.grad.abs().max() > 0 for p in side.parameters())


def test_float32_under_bf16_autocast_and_half_inputs():
    loss = build().eval()
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32), seed=1)
    s_out, t_out = heads()
    base = loss(s, t, s_out, t_out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(s, t, s_out, t_out)
    for key in base:
        assert out[key].dtype == torch.float32 and torch.isfinite(out[key])
        torch.testing.assert_close(out[key], base[key])
    half = loss(
        {k: v.half() for k, v in s.items()},
        {k: v.bfloat16() for k, v in t.items()},
        s_out.half(),
        t_out.bfloat16(),
    )
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in half.values())


@pytest.mark.filterwarnings("ignore:ContrastiveLoss at batch size 1")
def test_batch_one_in_training_mode_global_and_spatial():
    out = run(build().train(), batch=1)
    assert all(torch.isfinite(v) for v in out.values())
    s, t = feats(S_CH, (16, 16), batch=1, grad=True), feats(T_CH, (32, 32), batch=1, seed=1)
    loss = build(contrastive="spatial", num_samples=32, alpha_kd=0.0).train()
    assert isinstance(loss.projectors_s["pts_neck"], SpatialProjector)
    out = loss(s, t, foreground=torch.rand(1, 32, 32))
    out["loss_crd.pts_neck"].backward()
    assert out["loss_crd.pts_neck"].item() > 0 and s["pts_neck"].grad.abs().max() > 0


def test_spatial_contrastive_needs_bev_maps():
    ch = {"pts_voxel_encoder": 8}
    loss = BEVFusionDistillationLoss(ch, ch, contrastive="spatial")
    with pytest.raises(ValueError, match=r"term 'crd' reads cells and needs a BEV map"):
        loss(feats(ch, (50,)), feats(ch, (50,)))


def test_attention_only_for_spatial_maps():
    ch = {"pooled": 8, "voxels": 4}
    loss = BEVFusionDistillationLoss(ch, ch)
    assert isinstance(loss.projectors_s["pooled"], ProjectionMLP)
    s = {"pooled": torch.randn(4, 8), "voxels": torch.randn(4, 4, 2, 8, 8)}
    t = {"pooled": torch.randn(4, 8), "voxels": torch.randn(4, 4, 3, 16, 16)}
    assert set(loss(s, t)) == {"loss_crd.pooled", "loss_crd.voxels", "loss_at.voxels"}


def test_foreground_reaches_attention_transfer():
    s, t = feats(S_CH, (16, 16)), feats(T_CH, (32, 32), seed=1)
    fg = torch.zeros(4, 32, 32)
    fg[:, 8:24, 8:24] = 1
    out = build(alpha_crd=0.0)(s, t, foreground=fg)
    expected = 0.5 * AttentionTransferLoss()(s["pts_neck"], t["pts_neck"], mask=fg)
    torch.testing.assert_close(out["loss_at.pts_neck"], expected)


@pytest.mark.parametrize("contrastive", ["global", "spatial"])
def test_gradcheck(contrastive):
    ch_s, ch_t = {"a": 3, "b": 2}, {"a": 4, "b": 2}
    torch.manual_seed(0)
    loss = BEVFusionDistillationLoss(ch_s, ch_t, feat_dim=4, contrastive=contrastive, num_samples=6)
    loss = loss.double().eval()
    g = torch.Generator().manual_seed(1)
    sa = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sb = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    so = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    t = {
        "a": torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64),
        "b": torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64),
    }
    to = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)  # student heatmap upsampled

    def total(a, b, o):
        torch.manual_seed(2)  # the same cells for spatial InfoNCE on every evaluation
        return sum(loss({"a": a, "b": b}, t, o, to).values())

    assert torch.autograd.gradcheck(total, (sa, sb, so), fast_mode=True)


# --- end to end on BEV detectors with different grids and widths ------------------------------


def capture(model, names):
    """Hooks on dotted module names; returns (features dict, handles)."""
    store = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o))
        for n in names
    ]
    return store, handles


def test_end_to_end_with_tiny_detectors_reduces_the_distillation_loss():
    torch.manual_seed(0)
    teacher = TinyBEVDetector(channels=(32, 64), neck_channels=64, grid=(32, 32)).eval()
    student = TinyBEVDetector(channels=(8, 16), neck_channels=16, grid=(16, 16))
    names = ["pts_middle_encoder", "pts_neck", "bbox_head.heatmap_head"]
    t_feats, t_handles = capture(teacher, names)
    s_feats, s_handles = capture(student, names)
    inputs, samples = random_batch(batch_size=2, grid=(16, 16), seed=3)
    with torch.no_grad():
        teacher._forward(inputs)
    layers = {"pts_middle_encoder", "pts_neck"}

    def channels(f):
        return {
            n: (v[0] if isinstance(v, list) else v).shape[1] for n, v in f.items() if n in layers
        }

    student._forward(inputs)
    loss = BEVFusionDistillationLoss(channels(s_feats), channels(t_feats), alpha_crd=0.0)
    assert loss.student_channels == {"pts_middle_encoder": 5, "pts_neck": 16}
    assert loss.teacher_channels == {"pts_middle_encoder": 5, "pts_neck": 64}

    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    history = []
    for _ in range(15):
        det = student.loss(inputs, samples)
        teacher_heat = t_feats["bbox_head.heatmap_head"]
        feats_s = {n: s_feats[n] for n in layers}
        feats_t = {n: t_feats[n] for n in layers}
        distill = loss(feats_s, feats_t, s_feats["bbox_head.heatmap_head"], teacher_heat)
        assert set(distill) == {"loss_at.pts_middle_encoder", "loss_at.pts_neck", "loss_kd.heatmap"}
        # The teacher is untrained and the targets random, so the detection loss only rides along.
        total = 0.1 * det["loss_heatmap"] + sum(distill.values())
        history.append({k: v.item() for k, v in distill.items()})
        opt.zero_grad()
        total.backward()
        opt.step()
    for h in (*t_handles, *s_handles):
        h.remove()
    assert history[-1]["loss_at.pts_neck"] < 0.7 * history[0]["loss_at.pts_neck"]
    assert history[-1]["loss_kd.heatmap"] < 0.7 * history[0]["loss_kd.heatmap"]
    # The middle encoder has no weights: its attention depends only on the points, so it stays.
    assert history[-1]["loss_at.pts_middle_encoder"] == pytest.approx(
        history[0]["loss_at.pts_middle_encoder"]
    )


# --- spatial InfoNCE projects only the sampled cells ------------------------------------------


def test_spatial_term_equals_projecting_whole_maps_when_grids_match():
    """Sampling K cells and projecting them is the full-map computation read at those cells
    (the cells are teacher-grid centres, and both maps are on that grid here)."""
    from bevdistill import SpatialContrastiveLoss

    loss = build(contrastive="spatial", num_samples=24, alpha_at=0.0, alpha_kd=0.0)
    s, t = feats(S_CH, (8, 8), seed=3), feats(T_CH, (8, 8), seed=4)
    torch.manual_seed(11)
    fast = loss(s, t)
    reference = SpatialContrastiveLoss(loss.contrastive_loss.temperature, num_samples=24)
    torch.manual_seed(11)  # the same cells: the same draws from the global generator
    for layer in S_CH:
        key = layer.replace(".", "__")
        full = reference(loss.projectors_s[key](s[layer]), loss.projectors_t[key](t[layer]))
        torch.testing.assert_close(fast[f"loss_crd.{layer}"], full, rtol=1e-5, atol=1e-6)


def test_spatial_term_does_not_project_whole_maps(monkeypatch):
    """The speed fix: the projectors see the K sampled cells ([B, C, K, 1]), never a whole map."""
    from bevdistill import SpatialProjector

    seen = []
    project = SpatialProjector.forward

    def recording(self, x):
        seen.append(tuple(x.shape[-2:]))
        return project(self, x)

    loss = build(contrastive="spatial", num_samples=16, alpha_kd=0.0)
    monkeypatch.setattr(SpatialProjector, "forward", recording)
    out = run(loss, outputs=False)
    assert all(torch.isfinite(v) for v in out.values())
    assert seen and set(seen) == {(16, 1)}, seen


def test_spatial_term_rejects_non_finite_features_it_samples():
    loss = build(contrastive="spatial", num_samples=16, alpha_at=0.0, alpha_kd=0.0)
    s, t = feats(S_CH, (8, 8)), feats(T_CH, (8, 8), seed=1)
    t["pts_neck"] = torch.full_like(t["pts_neck"], float("nan"))
    with pytest.raises(ValueError, match=r"loss_crd.pts_neck: teacher feature contains NaN or inf"):
        loss(s, t)


def test_projector_hidden_width_is_a_setting():
    loss = BEVFusionDistillationLoss({"pts_neck": 16}, {"pts_neck": 32}, contrastive="spatial",
                                     feat_dim=8, hidden_dim=12)
    for projectors in (loss.projectors_s, loss.projectors_t):
        assert projectors["pts_neck"].hidden_dim == 12
