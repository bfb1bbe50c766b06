"""Step 1 feature capture: FeatureRecorder and BEVFusionDistillationWrapper.

Each defect of the tutorial's wrapper has a regression test here: hooks never removed,
stale features, no report of a layer that failed to fire, tuple/list outputs breaking it.
"""

from __future__ import annotations

import copy
import warnings
from collections import namedtuple

import pytest
import torch
from torch import nn
from warnings_support import reset_warnings

from bevdistill import BEVFusionDistillationWrapper, FeatureRecorder, HookPointError
from bevdistill.capture import (
    DEFAULT_HOOK_POINTS,
    CaptureWarning,
    HookNotFiredError,
    resolve_hook_point,
)
from bevdistill.models.tiny import TinyBEVDetector, random_batch


@pytest.fixture(autouse=True)
def _fresh_warnings():
    reset_warnings()
    yield
    reset_warnings()


def make_model(**kwargs) -> TinyBEVDetector:
    torch.manual_seed(0)
    return TinyBEVDetector(**kwargs)


def batch(seed: int = 0):
    return random_batch(batch_size=2, num_points=800, seed=seed)


def hook_counts(model: nn.Module, names=DEFAULT_HOOK_POINTS) -> list[int]:
    return [len(model.get_submodule(n)._forward_hooks) for n in names]


def direct_outputs(model: TinyBEVDetector, inputs: dict) -> dict:
    bev = model.pts_middle_encoder(inputs["points"])
    scales = model.pts_backbone(bev)
    return {"pts_middle_encoder": bev, "pts_backbone": scales, "pts_neck": model.pts_neck(scales)}


class NeckSkipping(TinyBEVDetector):
    """pts_neck runs only while ``skip_neck`` is False."""

    def __init__(self):
        super().__init__(channels=(32, 32), neck_channels=32)
        self.skip_neck = False

    def extract_feat(self, batch_inputs_dict):
        feats = self.pts_backbone(self.pts_middle_encoder(batch_inputs_dict["points"]))
        return feats[0] if self.skip_neck else self.pts_neck(feats)[0]


# --- the wrapper's contract ------------------------------------------------------------


def test_wrapper_returns_model_result_and_every_default_layer():
    model = make_model()
    reference = copy.deepcopy(model)
    inputs, samples = batch()
    with BEVFusionDistillationWrapper(model) as wrapper:
        result, features = wrapper(inputs, samples)
    expected = reference.loss(inputs, samples)
    torch.testing.assert_close(result["loss_heatmap"], expected["loss_heatmap"])
    assert list(features) == list(DEFAULT_HOOK_POINTS)
    assert wrapper.hook_points == DEFAULT_HOOK_POINTS
    outputs = direct_outputs(reference, inputs)
    torch.testing.assert_close(features["pts_middle_encoder"], outputs["pts_middle_encoder"])
    for got, want in zip(features["pts_neck"], outputs["pts_neck"], strict=True):
        torch.testing.assert_close(got, want)


def test_tuple_and_list_outputs_keep_their_type_and_length():
    """Regression: the tutorial's teacher path broke on tuple/list outputs."""
    model = make_model()
    outputs = direct_outputs(copy.deepcopy(model), batch()[0])
    with BEVFusionDistillationWrapper(model, is_student=False) as teacher:
        _, features = teacher(*batch())
    assert type(features["pts_backbone"]) is tuple and len(features["pts_backbone"]) == 2
    assert type(features["pts_neck"]) is list and len(features["pts_neck"]) == 1
    for got, want in zip(features["pts_backbone"], outputs["pts_backbone"], strict=True):
        torch.testing.assert_close(got, want)
        assert not got.requires_grad


def test_namedtuple_output_stays_a_namedtuple():
    Pair = namedtuple("Pair", "a b")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.split = nn.Identity()

        def forward(self, x):
            self.split(x)
            return x

    net = Net()
    net.split.forward = lambda x: Pair(x, 2 * x)  # an instance override keeps hooks working
    with FeatureRecorder(net, ["split"], detach=True) as rec:
        with rec.recording():
            net(torch.ones(2, requires_grad=True))
    assert isinstance(rec.features["split"], Pair)
    assert not rec.features["split"].b.requires_grad


def test_close_removes_every_hook_and_only_its_own():
    """Regression: the tutorial never removed its hooks."""
    model = make_model()
    foreign = model.pts_backbone.register_forward_hook(lambda m, a, o: None)
    before = hook_counts(model)
    wrapper = BEVFusionDistillationWrapper(model)
    assert hook_counts(model) == [b + 1 for b in before]
    wrapper(*batch())
    wrapper.close()
    wrapper.close()  # idempotent
    assert hook_counts(model) == before
    foreign.remove()
    assert hook_counts(model) == [0, 0, 0]


def test_after_close_the_model_no_longer_feeds_features():
    model = make_model()
    wrapper = BEVFusionDistillationWrapper(model)
    _, features = wrapper(*batch())
    kept = features["pts_middle_encoder"].clone()
    wrapper.close()
    model.loss(*batch(seed=5))
    torch.testing.assert_close(wrapper.features["pts_middle_encoder"], kept)
    with pytest.raises(RuntimeError, match="closed"):
        wrapper(*batch())


def test_context_managers_close():
    model = make_model()
    with FeatureRecorder(model) as rec:
        assert hook_counts(model) == [1, 1, 1]
    assert rec.closed and hook_counts(model) == [0, 0, 0]
    with BEVFusionDistillationWrapper(model) as wrapper:
        wrapper(*batch())
    assert hook_counts(model) == [0, 0, 0]


def test_features_are_cleared_at_every_forward():
    """Regression: stale features. A layer skipped this time must not return last step's output."""
    model = NeckSkipping()
    wrapper = BEVFusionDistillationWrapper(model, on_missing="ignore")
    _, first = wrapper(*batch(seed=1))
    assert "pts_neck" in first
    model.skip_neck = True
    _, second = wrapper(*batch(seed=2), mode="predict")
    assert "pts_neck" not in second
    assert wrapper.recorder.missing == ["pts_neck"]
    assert not torch.equal(first["pts_middle_encoder"], second["pts_middle_encoder"])


def test_each_forward_returns_a_fresh_dict():
    """A caller holding last step's features must not see them change."""
    wrapper = BEVFusionDistillationWrapper(make_model())
    _, first = wrapper(*batch(seed=1))
    kept = first["pts_middle_encoder"].clone()
    _, second = wrapper(*batch(seed=2))
    assert first is not second
    assert set(first) == set(DEFAULT_HOOK_POINTS)
    torch.testing.assert_close(first["pts_middle_encoder"], kept)


def test_returned_features_do_not_follow_later_model_calls():
    """Hooks still fire on a direct model call; the dict a caller holds must not change."""
    model = make_model()
    wrapper = BEVFusionDistillationWrapper(model)
    _, features = wrapper(*batch(seed=1))
    kept = features["pts_middle_encoder"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "fired twice" is about one recorded forward only
        model.loss(*batch(seed=2))
    assert features["pts_middle_encoder"] is kept
    assert wrapper.features["pts_middle_encoder"] is not kept


def test_a_layer_that_never_fires_is_named():
    """Regression: BEVFusion builds pts_voxel_encoder but never calls it."""
    points = (*DEFAULT_HOOK_POINTS, "pts_voxel_encoder")
    wrapper = BEVFusionDistillationWrapper(make_model(), hook_points=points)
    with pytest.raises(HookNotFiredError) as info:
        wrapper(*batch())
    message = str(info.value)
    assert "pts_voxel_encoder" in message and "Remove it from hook_points" in message
    assert "pts_backbone" in message.split("fired:")[1]  # it also says which ones did fire
    assert isinstance(info.value, HookPointError) and isinstance(info.value, KeyError)
    assert wrapper.recorder.missing == ["pts_voxel_encoder"]


def test_on_missing_warn_warns_once_and_keeps_the_rest():
    points = (*DEFAULT_HOOK_POINTS, "pts_voxel_encoder")
    wrapper = BEVFusionDistillationWrapper(make_model(), hook_points=points, on_missing="warn")
    with pytest.warns(CaptureWarning, match="pts_voxel_encoder"):
        _, features = wrapper(*batch())
    assert set(features) == set(DEFAULT_HOOK_POINTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapper(*batch())  # the same cause does not warn again


def test_on_missing_ignore_is_silent():
    points = (*DEFAULT_HOOK_POINTS, "pts_voxel_encoder")
    wrapper = BEVFusionDistillationWrapper(make_model(), hook_points=points, on_missing="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, features = wrapper(*batch())
    assert "pts_voxel_encoder" not in features
    assert wrapper.recorder.missing == ["pts_voxel_encoder"]


# --- hook points by dotted name --------------------------------------------------------


def test_unknown_name_lists_nearest_valid_names():
    model = make_model()
    with pytest.raises(HookPointError) as info:
        FeatureRecorder(model, ["pts_bakbone"])
    message = str(info.value)
    assert "'pts_backbone'" in message and "named_modules()" in message
    assert not message.startswith("'")  # printed plainly, not as a quoted KeyError repr
    with pytest.raises(HookPointError, match="'bbox_head.heatmap_head'"):
        FeatureRecorder(model, ["heatmap_head"])


def test_a_typo_hooks_nothing():
    model = make_model()
    with pytest.raises(HookPointError):
        FeatureRecorder(model, ["pts_neck", "pts_nekc"])
    assert hook_counts(model, ["pts_neck"]) == [0]


def test_a_module_that_is_none_says_it_was_not_built():
    model = make_model()
    model.img_backbone = None  # a LiDAR-only BEVFusion has no camera branch
    with pytest.raises(HookPointError, match="is None .*not built"):
        FeatureRecorder(model, ["img_backbone"])


def test_a_non_module_attribute_is_refused():
    with pytest.raises(HookPointError, match="not an nn.Module"):
        resolve_hook_point(make_model(), "grid")


def test_dotted_names_reach_any_submodule():
    model = make_model()
    inputs, samples = batch()
    expected = copy.deepcopy(model)(inputs, samples, mode="tensor")["heatmap"]
    points = ["bbox_head.heatmap_head", "pts_backbone.stages.0"]
    with BEVFusionDistillationWrapper(model, is_student=True, hook_points=points) as wrapper:
        result, features = wrapper(inputs, samples, mode="tensor")
    torch.testing.assert_close(features["bbox_head.heatmap_head"], expected)
    torch.testing.assert_close(result["heatmap"], expected)
    assert features["pts_backbone.stages.0"].shape == (2, 16, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hook_points": []}, ValueError, "empty"),
        ({"hook_points": ["pts_neck", "pts_neck"]}, ValueError, "more than once"),
        ({"hook_points": [""]}, HookPointError, "non-empty"),
        ({"on_missing": "skip"}, ValueError, "on_missing"),
        ({"select": {"pts_head": 0}}, HookPointError, "not a hook point"),
        ({"select": {"pts_backbone": "0"}}, TypeError, "int index"),
    ],
)
def test_bad_arguments_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        FeatureRecorder(make_model(), **kwargs)


def test_a_single_string_is_one_hook_point():
    assert FeatureRecorder(make_model(), "pts_neck").hook_points == ("pts_neck",)


# --- output handling -------------------------------------------------------------------


def test_select_picks_one_element_with_negative_indices():
    model = make_model()
    outputs = direct_outputs(copy.deepcopy(model), batch()[0])
    select = {"pts_backbone": -1, "pts_neck": 0}
    with BEVFusionDistillationWrapper(model, select=select) as wrapper:
        _, features = wrapper(*batch())
    torch.testing.assert_close(features["pts_backbone"], outputs["pts_backbone"][1])
    torch.testing.assert_close(features["pts_neck"], outputs["pts_neck"][0])


def test_select_out_of_range_names_the_layer_and_its_length():
    wrapper = BEVFusionDistillationWrapper(make_model(), select={"pts_backbone": 2})
    with pytest.raises(ValueError, match=r"pts_backbone.*tuple of length 2"):
        wrapper(*batch())


def test_select_on_a_tensor_output_is_refused():
    wrapper = BEVFusionDistillationWrapper(make_model(), select={"pts_middle_encoder": 0})
    with pytest.raises(TypeError, match="pts_middle_encoder returned a Tensor"):
        wrapper(*batch())


class FakeSparseConvTensor:
    """Stands in for spconv's SparseConvTensor: only ``.dense()`` matters to the recorder."""

    def __init__(self, dense: torch.Tensor):
        self._dense = dense

    def dense(self) -> torch.Tensor:
        return self._dense * 1.0


class SparseNet(nn.Module):
    """A middle encoder returning sparse objects, alone and inside a tuple."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.encoder = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.encoder(x)


def _sparsify(kind: str):
    def hook(module, args, output):
        if kind == "spconv":
            return FakeSparseConvTensor(output), [FakeSparseConvTensor(2 * output)]
        return output.to_sparse()

    return hook


@pytest.mark.parametrize("kind", ["spconv", "torch"])
@pytest.mark.parametrize("detach", [True, False])
def test_sparse_outputs_are_densified(kind, detach):
    net = SparseNet(kind)
    net.encoder.register_forward_hook(_sparsify(kind))  # replaces the output, as spconv would
    x = torch.rand(1, 1, 4, 5)
    dense = net.encoder.weight[:, :, 0, 0].reshape(1, 2, 1, 1) * x + net.encoder.bias.view(
        1, 2, 1, 1
    )
    with FeatureRecorder(net, ["encoder"], detach=detach) as rec:
        with rec.recording():
            net(x)
    got = rec.features["encoder"]
    if kind == "spconv":
        assert isinstance(got, tuple) and isinstance(got[1], list)
        tensors = [got[0], got[1][0]]
        torch.testing.assert_close(got[1][0], 2 * dense)
    else:
        tensors = [got]
    torch.testing.assert_close(tensors[0], dense)
    for t in tensors:
        assert t.layout == torch.strided
        assert t.requires_grad is (not detach)


def test_dict_outputs_keep_keys_and_detach_every_value():
    model = make_model()
    with BEVFusionDistillationWrapper(model, hook_points=["bbox_head"]) as teacher:
        _, features = teacher(*batch())
    assert set(features["bbox_head"]) == {"heatmap", "reg"}
    assert not any(v.requires_grad for v in features["bbox_head"].values())


def test_a_shared_module_keeps_its_last_output_and_counts_calls():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(3, 3)

        def forward(self, x):
            return self.block(self.block(x))

    net = Shared()
    x = torch.rand(2, 3)
    with FeatureRecorder(net, ["block"]) as rec:
        with pytest.warns(CaptureWarning, match="more than once"):
            with rec.recording():
                out = net(x)
    torch.testing.assert_close(rec.features["block"], out)
    assert rec.fire_counts == {"block": 2}


# --- teacher vs student autograd -------------------------------------------------------


def test_teacher_detached_student_keeps_graph():
    """Gradients of a distillation loss reach the student only, never the teacher."""
    teacher_model, student_model = make_model(), make_model()
    teacher = BEVFusionDistillationWrapper(teacher_model, is_student=False)
    student = BEVFusionDistillationWrapper(student_model, is_student=True)
    with torch.enable_grad():
        _, t_feats = teacher(*batch())
        _, s_feats = student(*batch())
    t_all = [t_feats["pts_middle_encoder"], *t_feats["pts_backbone"], *t_feats["pts_neck"]]
    assert not any(t.requires_grad for t in t_all)
    assert all(t.grad_fn is not None for t in [*s_feats["pts_backbone"], *s_feats["pts_neck"]])
    loss = (s_feats["pts_neck"][0] - t_feats["pts_neck"][0]).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in teacher_model.parameters())
    assert all(p.grad is not None for p in student_model.pts_backbone.parameters())


# --- double registration ---------------------------------------------------------------


def test_wrapping_the_same_model_twice_leaves_one_hook_per_module():
    """Re-running a notebook cell must not stack hooks."""
    model = make_model()
    foreign = model.pts_neck.register_forward_hook(lambda m, a, o: None)
    old = BEVFusionDistillationWrapper(model)
    with pytest.warns(CaptureWarning, match="already hooked"):
        new = BEVFusionDistillationWrapper(model, is_student=True)
    assert hook_counts(model) == [1, 1, 2]  # pts_neck also keeps the foreign hook
    with pytest.raises(RuntimeError, match="taken over"):
        old(*batch())
    old.close()  # must not remove the new wrapper's hooks
    _, features = new(*batch())
    assert set(features) == set(DEFAULT_HOOK_POINTS)
    new.close()
    assert hook_counts(model) == [0, 0, 1]
    foreign.remove()


def test_register_hooks_again_replaces_the_old_hooks():
    model = make_model()
    wrapper = BEVFusionDistillationWrapper(model)
    wrapper._register_hooks()
    assert hook_counts(model) == [1, 1, 1]
    _, features = wrapper(*batch())
    assert set(features) == set(DEFAULT_HOOK_POINTS)


def test_wrapping_a_wrapper_wraps_its_model():
    model = make_model()
    inner = BEVFusionDistillationWrapper(model)
    with pytest.warns(CaptureWarning):
        outer = BEVFusionDistillationWrapper(inner, is_student=True)
    assert outer.model is model
    assert hook_counts(model) == [1, 1, 1]
    _, features = outer(*batch())
    assert features["pts_neck"][0].grad_fn is not None


# --- modes and model API ---------------------------------------------------------------


def test_predict_and_tensor_modes_match_the_model():
    model = make_model()
    reference = copy.deepcopy(model)
    inputs, samples = batch()
    wrapper = BEVFusionDistillationWrapper(model)
    predicted, features = wrapper(inputs, samples, mode="predict")
    expected = reference.predict(inputs, samples)
    torch.testing.assert_close(predicted[1]["heatmap"], expected[1]["heatmap"])
    assert set(features) == set(DEFAULT_HOOK_POINTS)
    tensors, _ = wrapper(inputs, mode="tensor")
    torch.testing.assert_close(tensors["reg"], reference(inputs, mode="tensor")["reg"])


def test_unknown_mode_lists_the_valid_ones():
    wrapper = BEVFusionDistillationWrapper(make_model())
    with pytest.raises(ValueError, match="'loss', 'predict', 'tensor'"):
        wrapper(*batch(), mode="train")


def test_tensor_mode_needs_a_forward_with_mode():
    class NoMode(TinyBEVDetector):
        def forward(self, batch_inputs_dict):
            return self._forward(batch_inputs_dict)

    torch.manual_seed(0)
    wrapper = BEVFusionDistillationWrapper(NoMode())
    with pytest.raises(TypeError, match="no 'mode' argument"):
        wrapper(*batch(), mode="tensor")
    assert set(wrapper(*batch())[1]) == set(DEFAULT_HOOK_POINTS)


def test_a_model_without_loss_or_predict_is_refused():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.pts_backbone = nn.Identity()

    with pytest.raises(TypeError, match="no loss\\(\\) or predict\\(\\)"):
        BEVFusionDistillationWrapper(Plain())
    with pytest.raises(TypeError, match="nn.Module"):
        BEVFusionDistillationWrapper(object())


def test_an_error_inside_forward_propagates_and_the_next_forward_works():
    wrapper = BEVFusionDistillationWrapper(make_model())
    with pytest.raises(ValueError, match="gt_heatmap"):
        wrapper(batch()[0], None)  # TinyBEVDetector.loss needs targets
    _, features = wrapper(*batch())
    assert set(features) == set(DEFAULT_HOOK_POINTS)


def test_recorder_hook_stores_under_its_name():
    wrapper = BEVFusionDistillationWrapper(make_model())
    hook = wrapper.recorder.hook_fn("pts_neck")
    hook(None, (), [torch.ones(1)])
    assert wrapper.features["pts_neck"] == [torch.ones(1)]


def test_recorder_without_recording_accumulates_until_clear():
    model = make_model()
    with FeatureRecorder(model) as rec:
        model.loss(*batch())
        assert set(rec.features) == set(DEFAULT_HOOK_POINTS)
        rec.clear()
        assert rec.features == {} and rec.fire_counts == {}
