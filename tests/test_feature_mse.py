"""FeatureMSELoss (FitNets-style hint) and its 'loss_mse.<layer>' term in the combined loss."""

from __future__ import annotations

import pytest
import torch
from warnings_support import reset_warnings

from bevdistill import BEVFusionDistillationLoss, FeatureMSELoss
from bevdistill.bev_grid import resize_bev


def maps(cs=3, ct=5, s_grid=(8, 8), t_grid=(16, 16), batch=2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, cs, *s_grid, generator=g, dtype=dtype)
    t = torch.randn(batch, ct, *t_grid, generator=g, dtype=dtype)
    return s, t


def reference(loss: FeatureMSELoss, s, t, fg=None):
    """Written differently: per-channel einsum adapter, upsample/downsample with resize_bev, and
    an explicit per-sample weighted average."""
    w = loss.adapter.weight[:, :, 0, 0]
    adapted = torch.einsum("oc,bchw->bohw", w, resize_bev(s, t.shape[-2:]))
    adapted = adapted + loss.adapter.bias.view(1, -1, 1, 1)
    err = ((adapted - t) ** 2).mean(dim=1)
    if fg is None:
        return err.mean()
    weights = resize_bev(fg.unsqueeze(1).to(err), t.shape[-2:])[:, 0]
    return torch.stack([(wb * eb).sum() / wb.sum() for wb, eb in zip(weights, err, strict=True)]).mean()


@pytest.mark.parametrize("s_grid,t_grid", [((8, 8), (16, 16)), ((16, 16), (8, 8)),
                                           ((8, 8), (8, 8)), ((6, 10), (12, 20))])
def test_value_matches_a_reference_on_any_grids(s_grid, t_grid):
    torch.manual_seed(0)
    loss = FeatureMSELoss(3, 5)
    s, t = maps(s_grid=s_grid, t_grid=t_grid)
    torch.testing.assert_close(loss(s, t), reference(loss, s, t), rtol=1e-5, atol=1e-6)


def test_zero_when_the_adapted_student_is_the_teacher():
    loss = FeatureMSELoss(4, 4)
    with torch.no_grad():
        loss.adapter.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        loss.adapter.bias.zero_()
    s = torch.randn(2, 4, 8, 8)
    assert loss(s, s.clone()).item() == 0.0
    assert loss(s, s + 1).item() == pytest.approx(1.0)


def test_foreground_weighting_and_empty_foreground_fallback():
    torch.manual_seed(1)
    loss = FeatureMSELoss(3, 5)
    s, t = maps()
    fg = torch.zeros(2, 4, 4)
    fg[0, 1, 2] = 1.0
    fg[1, :2] = 0.5
    weighted = loss(s, t, mask=fg)
    torch.testing.assert_close(weighted, reference(loss, s, t, fg), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(weighted, loss(s, t))
    reset_warnings()
    fg[0] = 0.0
    with pytest.warns(UserWarning, match="foreground is all zero"):
        value = loss(s, t, mask=fg)
    fg_uniform = fg.clone()
    fg_uniform[0] = 1.0
    torch.testing.assert_close(value, reference(loss, s, t, fg_uniform), rtol=1e-5, atol=1e-6)


def test_teacher_is_detached_and_student_and_adapter_get_gradients():
    loss = FeatureMSELoss(3, 5)
    s, t = maps()
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert loss.adapter.weight.grad.abs().sum() > 0


def test_gradcheck_student_and_adapter():
    torch.manual_seed(2)
    loss = FeatureMSELoss(3, 4).double()
    s, t = maps(cs=3, ct=4, s_grid=(4, 6), t_grid=(8, 12), dtype=torch.float64)
    fg = torch.rand(2, 8, 12, dtype=torch.float64)
    s.requires_grad_(True)
    weight = loss.adapter.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, mask=fg), (s,))
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))

    def through_module(w):  # the adapter's weight, through the module itself
        return torch.func.functional_call(loss, {"adapter.weight": w}, (s.detach(), t), {"mask": fg})

    assert torch.autograd.gradcheck(through_module, (weight,))


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: FeatureMSELoss(3, 5)(torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8, 8)),
         ValueError, "student_feat has 4 channels"),
        (lambda: FeatureMSELoss(3, 5)(torch.randn(2, 3, 8, 8), torch.randn(2, 6, 8, 8)),
         ValueError, "teacher_feat has 6 channels"),
        (lambda: FeatureMSELoss(3, 5)(torch.randn(2, 3, 8), torch.randn(2, 5, 8, 8)),
         ValueError, r"BEV maps \[B, C, H, W\]"),
        (lambda: FeatureMSELoss(3, 5)(torch.randn(2, 3, 8, 8), torch.randn(3, 5, 8, 8)),
         ValueError, "batch sizes differ"),
        (lambda: FeatureMSELoss(3, 5)(torch.full((2, 3, 8, 8), float("nan")),
                                      torch.randn(2, 5, 8, 8)), ValueError, "NaN or inf"),
        (lambda: FeatureMSELoss(3, 5)([1.0], torch.randn(2, 5, 8, 8)), TypeError, "float tensor"),
        (lambda: FeatureMSELoss(0, 5), ValueError, "student_channels"),
        (lambda: FeatureMSELoss(3, True), ValueError, "teacher_channels"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- the term in BEVFusionDistillationLoss ---------------------------------------------------


def test_combined_mse_term_key_value_and_off_by_default():
    channels_s, channels_t = {"pts_neck": 3}, {"pts_neck": 5}
    s, t = maps()
    off = BEVFusionDistillationLoss(channels_s, channels_t, alpha_kd=0.0)
    assert "loss_mse.pts_neck" not in off({"pts_neck": s}, {"pts_neck": t})
    assert len(off.feature_losses) == 0
    torch.manual_seed(3)
    on = BEVFusionDistillationLoss(channels_s, channels_t, alpha_crd=0.0, alpha_at=0.0,
                                   alpha_kd=0.0, alpha_mse=2.5, layer_weights={"pts_neck": 0.5})
    out = on({"pts_neck": s}, {"pts_neck": t})
    assert sorted(out) == ["loss_mse.pts_neck"]
    expected = 2.5 * 0.5 * reference(on.feature_losses["pts_neck"], s, t)
    torch.testing.assert_close(out["loss_mse.pts_neck"], expected, rtol=1e-5, atol=1e-6)
    # the adapter trains with the student: it is a parameter of the loss
    assert any(p is on.feature_losses["pts_neck"].adapter.weight for p in on.parameters())


def test_combined_mse_needs_bev_maps_and_rejects_a_negative_weight():
    with pytest.raises(ValueError, match="alpha_mse"):
        BEVFusionDistillationLoss({"a": 3}, {"a": 5}, alpha_mse=-1.0)
    loss = BEVFusionDistillationLoss({"a": 3}, {"a": 5}, alpha_crd=0.0, alpha_at=0.0,
                                     alpha_kd=0.0, alpha_mse=1.0)
    with pytest.raises(ValueError, match=r"loss_mse.a: FeatureMSELoss needs BEV maps"):
        loss({"a": torch.randn(2, 3)}, {"a": torch.randn(2, 5)})
