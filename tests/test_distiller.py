"""Step 6: the Distiller (frozen teacher + student + distillation loss as one mmengine model).

Mostly TinyBEVDetector pairs, so the file runs in seconds; the project presets get their own
tests at the end. Each requirement of issue 3, section 3, has a test that fails if it breaks.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS
from torch import nn
from warnings_support import reset_warnings

from bevdistill.capture import HookNotFiredError, HookPointError
from bevdistill.distiller import (
    Distiller,
    DistillerBuildError,
    TeacherCheckpointError,
    build_bevfusion_distillation,
    example_inputs_for,
)
from bevdistill.engine.weights import load_weights
from bevdistill.exercises.step6_build import STUDENT as SMALL_STUDENT
from bevdistill.exercises.step6_build import TEACHER as SMALL_TEACHER
from bevdistill.losses.recipe import tutorial_terms
from bevdistill.models import build_detector
from bevdistill.models.tiny import TinyBEVDetector, random_batch

TEACHER_GRID = (64, 64)
STUDENT_GRID = (32, 32)


@pytest.fixture(autouse=True)
def _fresh_warnings():
    reset_warnings()
    yield
    reset_warnings()


def teacher_model(seed: int = 1, **kwargs) -> TinyBEVDetector:
    torch.manual_seed(seed)
    kwargs.setdefault("channels", (32, 64))
    kwargs.setdefault("neck_channels", 64)
    kwargs.setdefault("grid", TEACHER_GRID)
    return TinyBEVDetector(**kwargs)


def student_model(seed: int = 2, **kwargs) -> TinyBEVDetector:
    torch.manual_seed(seed)
    kwargs.setdefault("channels", (8, 16))
    kwargs.setdefault("neck_channels", 16)
    kwargs.setdefault("grid", STUDENT_GRID)
    return TinyBEVDetector(**kwargs)


def batch(seed: int = 0, batch_size: int = 2):
    return random_batch(batch_size=batch_size, num_points=1000, grid=STUDENT_GRID, seed=seed)


def make_distiller(teacher=None, student=None, driver=None, **kwargs) -> Distiller:
    driver = {"example_inputs": batch(seed=99)[0], **(driver or {})}
    return Distiller(teacher or teacher_model(), student or student_model(), driver=driver,
                     **kwargs)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_steps(d: Distiller, steps: int = 3, lr: float = 1e-2) -> None:
    optim = build_optim_wrapper(d, dict(optimizer=dict(type="AdamW", lr=lr)))
    d.train()
    for step in range(steps):
        inputs, samples = batch(seed=step)
        losses = d.loss(inputs, samples)
        optim.update_params(sum(v for k, v in losses.items() if "loss" in k))


# --- the teacher: frozen, eval, outside the module tree ------------------------------------


def test_teacher_is_frozen_and_stays_in_eval_on_every_train_call():
    d = make_distiller()
    assert not any(p.requires_grad for p in d.teacher.parameters())
    for call in (d.train, lambda: d.train(True), d.eval, d.train, lambda: d.train(False), d.train):
        call()
        assert not any(m.training for m in d.teacher.modules())
    assert d.student.training  # the last call was train(): the student follows
    d.teacher.train()  # put in train mode by hand: the next .train() call brings it back
    d.train()
    assert not any(m.training for m in d.teacher.modules())


def test_teacher_batchnorm_statistics_never_move_during_training():
    d = make_distiller()
    before = snapshot(d.teacher)
    student_before = snapshot(d.student)
    train_steps(d, steps=3)
    assert same_state(before, snapshot(d.teacher))
    assert not same_state(student_before, snapshot(d.student))  # the student did train

    # The check can fail: a teacher forward in train mode moves its running statistics.
    d.teacher.train()
    with torch.no_grad():
        d.teacher(batch()[0], None, mode="tensor")
    assert not same_state(before, snapshot(d.teacher))


def test_teacher_put_in_train_mode_by_hand_is_reset_by_loss():
    d = make_distiller()
    before = snapshot(d.teacher)
    d.teacher.train()
    with pytest.warns(UserWarning, match="teacher was in train mode"):
        d.loss(*batch())
    assert not d.teacher.training
    assert same_state(before, snapshot(d.teacher))


def test_state_dict_holds_student_and_projectors_only():
    d = make_distiller()
    keys = list(d.state_dict())
    student_keys = [f"student.{k}" for k in d.student.state_dict()]
    assert keys[: len(student_keys)] == student_keys
    rest = keys[len(student_keys) :]
    assert rest and all(k.startswith("distill_loss.") for k in rest)
    teacher_ptrs = {v.data_ptr() for v in d.teacher.state_dict().values()}
    assert not teacher_ptrs & {v.data_ptr() for v in d.state_dict().values()}


def test_optimizer_never_sees_the_teacher():
    d = make_distiller()
    optim = build_optim_wrapper(d, dict(optimizer=dict(type="SGD", lr=0.1)))
    in_optim = {id(p) for group in optim.optimizer.param_groups for p in group["params"]}
    assert not in_optim & {id(p) for p in d.teacher.parameters()}
    assert {id(p) for p in d.student.parameters()} <= in_optim
    assert {id(p) for p in d.distill_loss.parameters()} <= in_optim
    assert "teacher" not in dict(d.named_modules())


def test_resume_never_overwrites_the_teacher():
    d = make_distiller()
    teacher_before = snapshot(d.teacher)
    other = make_distiller(student=student_model(seed=7))
    d.load_state_dict(other.state_dict(), strict=True)
    assert same_state(teacher_before, snapshot(d.teacher))
    assert same_state(snapshot(d.student), snapshot(other.student))


def test_student_can_start_from_the_teachers_weights():
    teacher = student_model(seed=5)  # the student's network, other weights
    d = make_distiller(teacher=teacher, student=student_model(seed=2), student_init="teacher")
    teacher_before = snapshot(d.teacher)
    assert same_state(snapshot(d.student), teacher_before)
    with torch.no_grad():  # what an initialiser does to the copy, as the Runner's init may
        for p in d.student.parameters():
            p.zero_()
    d.init_weights()  # the Runner's call after building must not undo the copy
    assert same_state(snapshot(d.student), teacher_before)
    assert not {id(p) for p in d.student.parameters()} & {id(p) for p in d.teacher.parameters()}
    train_steps(d, steps=2)
    assert not same_state(snapshot(d.student), teacher_before)  # the student learns...
    assert same_state(snapshot(d.teacher), teacher_before)  # ...the teacher never moves


def test_student_init_from_the_teacher_needs_one_network():
    with pytest.raises(DistillerBuildError, match="student_init=None for a student of another"):
        make_distiller(student_init="teacher")  # narrow student, wide teacher
    with pytest.raises(ValueError, match="'teacher' copies the teacher's weights"):
        make_distiller(teacher=student_model(seed=5), student_init="scratch")


@pytest.mark.parametrize("convert", ["to", "double"])
def test_dtype_and_device_moves_carry_the_teacher(convert):
    d = make_distiller()
    d.to(torch.float64) if convert == "to" else d.double()
    assert all(p.dtype == torch.float64 for p in d.teacher.parameters())
    assert all(b.dtype == torch.float64 for b in d.teacher.buffers() if b.is_floating_point())
    assert all(p.dtype == torch.float64 for p in d.student.parameters())
    inputs, samples = batch()
    inputs = {"points": [p.double() for p in inputs["points"]]}
    losses = d.loss(inputs, samples)
    assert all(v.dtype == torch.float64 for v in losses.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_moves_the_teacher_and_trains_under_autocast():
    d = make_distiller().cuda()
    assert all(t.is_cuda for t in d.teacher.state_dict().values())
    inputs, samples = batch()
    inputs = {"points": [p.cuda() for p in inputs["points"]]}
    d.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = d.loss(inputs, samples)
    sum(losses.values()).backward()
    assert all(
        torch.isfinite(v) and v.dtype == torch.float32
        for k, v in losses.items()
        if k != "loss_heatmap"
    )
    assert all(p.grad is None for p in d.teacher.parameters())


def test_teacher_and_student_must_differ():
    m = teacher_model()
    with pytest.raises(ValueError, match="same module"):
        Distiller(m, m, driver=dict(example_inputs=batch()[0]))


# --- channels from a dry forward --------------------------------------------------------------


@pytest.mark.parametrize(
    "student_kwargs,teacher_kwargs",
    [
        (dict(channels=(8, 16), neck_channels=16), dict(channels=(32, 64), neck_channels=64)),
        (dict(channels=(12, 20), neck_channels=40), dict(channels=(24, 48), neck_channels=96)),
    ],
)
def test_channels_are_read_from_the_models(student_kwargs, teacher_kwargs):
    d = make_distiller(teacher_model(**teacher_kwargs), student_model(**student_kwargs))
    s_neck = student_kwargs["neck_channels"] // 2 * 2  # TinyNeck splits evenly over 2 scales
    t_neck = teacher_kwargs["neck_channels"] // 2 * 2
    assert d.student_channels == {
        "pts_middle_encoder": 5,
        "pts_backbone": student_kwargs["channels"][-1],
        "pts_neck": s_neck,
    }
    assert d.teacher_channels["pts_backbone"] == teacher_kwargs["channels"][-1]
    assert d.teacher_channels["pts_neck"] == t_neck
    proj = d.distill_loss.terms["crd"].student_connectors["pts_backbone"]
    assert proj.in_dim == student_kwargs["channels"][-1]
    losses = d.loss(*batch())
    sum(losses.values()).backward()


def test_select_picks_another_backbone_scale():
    d = make_distiller(driver=dict(select={"pts_backbone": 0}))
    assert d.student_channels["pts_backbone"] == 8
    assert d.teacher_channels["pts_backbone"] == 32


def test_dry_run_keeps_student_batchnorm_statistics_and_modes():
    student = student_model()
    student.train()
    student.pts_neck.eval()  # a mixed state must come back exactly
    flags = {n: m.training for n, m in student.named_modules()}
    before = snapshot(student)
    make_distiller(student=student)
    assert same_state(before, snapshot(student))
    assert flags == {n: m.training for n, m in student.named_modules()}


def test_default_example_inputs_come_from_the_point_cloud_range():
    class Ranged(TinyBEVDetector):
        point_cloud_range = (-25.6, -25.6, -5.0, 25.6, 25.6, 3.0)

    inputs = example_inputs_for(Ranged(), batch_size=3, num_points=100)
    assert len(inputs["points"]) == 3
    pts = torch.cat(inputs["points"])
    assert pts.shape == (300, 5)
    assert pts[:, 0].abs().max() <= 25.6 and pts[:, 2].min() >= -5.0 and pts[:, 2].max() <= 3.0
    torch.manual_seed(3)
    t = Ranged(channels=(32, 64), neck_channels=64)
    d = Distiller(t, Ranged())  # no example_inputs: uses the student's range
    assert d.teacher_channels["pts_neck"] == 64


def test_missing_range_says_how_to_fix():
    with pytest.raises(ValueError, match="example_inputs"):
        Distiller(teacher_model(), student_model())


# --- errors at build time ----------------------------------------------------------------------


def test_unknown_hook_point_names_the_nearest():
    with pytest.raises(HookPointError, match="pts_backbone"):
        make_distiller(terms=tutorial_terms(("pts_middle_encoder", "pts_backbon")))


def test_select_for_a_layer_not_hooked_is_an_error():
    with pytest.raises(HookPointError, match="not a hook point"):
        make_distiller(terms=tutorial_terms(("pts_neck",)), driver=dict(select={"pts_backbone": -1}))
    assert make_distiller(terms=tutorial_terms(("pts_neck",))).select == {}  # default drops out


def test_hook_point_that_never_fires_is_named():
    with pytest.raises(HookNotFiredError, match="pts_voxel_encoder"):
        make_distiller(terms=tutorial_terms(("pts_voxel_encoder", "pts_neck")))


def test_tuple_output_without_select_says_to_select():
    with pytest.raises(DistillerBuildError, match=r"select=\{'pts_backbone': -1\}"):
        make_distiller(driver=dict(select={}))


def test_output_the_losses_cannot_take_is_refused():
    with pytest.raises(DistillerBuildError, match="bbox_head.*must be a float tensor, got dict"):
        make_distiller(terms=tutorial_terms(("pts_neck", "bbox_head")))


def test_layer_the_loss_rejects_fails_at_build_time_not_in_step_one():
    class WithSummary(TinyBEVDetector):
        """Also computes a pooled [B, C] summary of the neck map (no grid for spatial InfoNCE)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.summary = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def extract_feat(self, inputs):
            feat = super().extract_feat(inputs)
            self.summary(feat)
            return feat

    torch.manual_seed(0)
    teacher = WithSummary(channels=(32, 64), neck_channels=64)
    student = WithSummary(channels=(8, 16), neck_channels=16)
    with pytest.raises(DistillerBuildError, match=r"summary.*\[B, C, H, W\]"):
        make_distiller(teacher, student,
                       terms=tutorial_terms(("pts_neck", "summary"), contrastive="spatial"))
    # the same layer is fine for the global contrastive loss, which pools anyway
    make_distiller(teacher, student, terms=tutorial_terms(("pts_neck", "summary")))


def test_channel_dicts_in_distill_are_refused():
    with pytest.raises(ValueError, match="dry forward"):
        make_distiller(distill=dict(student_channels={"pts_neck": 16}))


def test_old_arguments_are_converted_and_say_how_to_write_them():
    """The Distiller's arguments before terms and drivers still build the same model, with a
    warning naming the new keys; a misspelt argument is an error listing the real ones."""
    reset_warnings()
    with pytest.warns(FutureWarning, match=r"driver=dict\(type=\.\.\., example_inputs=\.\.\."):
        with pytest.warns(FutureWarning, match=r"write the recipe as terms=\[\.\.\.\]"):
            old = Distiller(teacher_model(), student_model(), example_inputs=batch(seed=99)[0],
                            hook_points=("pts_neck",), distill=dict(alpha_at=2.0))
    new = make_distiller(terms=tutorial_terms(("pts_neck",), alpha_at=2.0))
    assert old.loss_keys == new.loss_keys and old.hooks == new.hooks
    assert old.distill_loss.terms["at"].weight == 2.0
    with pytest.raises(TypeError, match="unknown arguments \\['hookpoints'\\].*terms, driver"):
        make_distiller(hookpoints=("pts_neck",))


# --- loss, predict, forward ----------------------------------------------------------------------


def test_loss_returns_detection_and_distillation_terms_with_the_right_gradients():
    d = make_distiller()
    d.train()
    inputs, samples = batch()
    detection = student_model()  # same seed as the distiller's student
    det_keys = set(detection.loss(inputs, samples))
    losses = d.loss(inputs, samples)
    assert det_keys < set(losses)
    distill_keys = set(losses) - det_keys
    assert {"loss_kd.heatmap", "loss_crd.pts_neck", "loss_at.pts_neck"} <= distill_keys
    assert all("loss" in k and v.dim() == 0 and torch.isfinite(v) for k, v in losses.items())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    backbone_grad = d.student.pts_backbone.stages[0][0][0].weight.grad
    assert backbone_grad is not None and backbone_grad.abs().sum() > 0
    assert d.distill_loss.terms["crd"].student_connectors["pts_neck"].layer1.weight.grad is not None


def test_distillation_alone_reaches_the_student():
    d = make_distiller()
    d.train()
    losses = d.loss(*batch())
    distill = sum(v for k, v in losses.items() if k.startswith(("loss_crd", "loss_at", "loss_kd")))
    distill.backward()
    grad = d.student.pts_backbone.stages[1][1][0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("how", ["no_term", "weight_0"])
def test_response_kd_can_be_disabled(how):
    terms = tutorial_terms(alpha_kd=0.0)
    if how == "no_term":
        terms = [t for t in terms if t["name"] != "kd"]
    d = make_distiller(terms=terms)
    assert d.kd_hook is None
    assert "bbox_head.heatmap_head" not in d.hooks["student"]
    assert not any(k.startswith("loss_kd") for k in d.loss(*batch()))


def test_the_teacher_is_not_run_while_every_term_weighs_zero():
    """A schedule that fades every term to 0 also stops the teacher's forward (nothing to
    teach); the distillation keys are still logged, as 0, and the student still trains."""
    from mmengine.logging import MessageHub

    d = make_distiller(terms=tutorial_terms(schedule=dict(decay_begin=10, decay_end=20, final=0)))
    runs = []
    d.teacher.register_forward_hook(lambda *args: runs.append(1))
    hub = MessageHub.get_current_instance()
    try:
        hub.update_info("iter", 5)
        assert d.distill_loss.active()
        taught = d.loss(*batch())
        assert runs and all(taught[k] > 0 for k in d.loss_keys)
        runs.clear()
        hub.update_info("iter", 25)
        assert not d.distill_loss.active()
        faded = d.loss(*batch())
    finally:
        hub.update_info("iter", 0)
    assert not runs
    assert set(faded) == set(taught) and all(float(faded[k]) == 0 for k in d.loss_keys)
    sum(faded.values()).backward()
    assert d.student.pts_backbone.stages[0][0][0].weight.grad is not None


def test_loss_name_clash_is_an_error():
    class Clashing(TinyBEVDetector):
        def loss(self, inputs, samples=None):
            return {"loss_kd.heatmap": super().loss(inputs, samples)["loss_heatmap"]}

    torch.manual_seed(2)
    d = make_distiller(student=Clashing(channels=(8, 16), neck_channels=16))
    with pytest.raises(KeyError, match="loss_kd.heatmap"):
        d.loss(*batch())


def test_predict_and_tensor_modes_are_the_students():
    d = make_distiller()
    d.eval()
    inputs, samples = batch()
    preds = d(inputs, samples, mode="predict")
    expected = d.student.predict(inputs, samples)
    assert len(preds) == len(expected)
    assert all(
        torch.equal(p["heatmap"], e["heatmap"]) for p, e in zip(preds, expected, strict=True)
    )
    out = d(inputs, mode="tensor")
    assert out["heatmap"].shape[-2:] == STUDENT_GRID
    assert isinstance(d(inputs, samples, mode="loss"), dict)
    with pytest.raises(ValueError, match="mode"):
        d(inputs, samples, mode="features")


def test_a_few_steps_reduce_the_distillation_loss():
    d = make_distiller(terms=tutorial_terms(alpha_crd=1.0, alpha_at=10.0, alpha_kd=1.0))
    inputs, samples = batch(seed=5)

    def distill_loss() -> float:
        d.eval()  # no dropout: the same number for the same weights
        with torch.no_grad():
            losses = d.loss(inputs, samples)
        return float(sum(v for k, v in losses.items() if k != "loss_heatmap"))

    start = distill_loss()
    optim = build_optim_wrapper(d, dict(optimizer=dict(type="AdamW", lr=3e-3)))
    for _ in range(15):
        d.train()
        losses = d.loss(inputs, samples)
        optim.update_params(sum(v for k, v in losses.items() if k != "loss_heatmap"))
    assert distill_loss() < 0.8 * start


def test_mmengine_train_step_and_val_step():
    d = make_distiller()
    optim = build_optim_wrapper(d, dict(optimizer=dict(type="AdamW", lr=1e-3)))
    inputs, samples = batch()
    data = {"inputs": inputs, "data_samples": samples}
    d.train()
    log_vars = d.train_step(data, optim)
    assert "loss" in log_vars and "loss_kd.heatmap" in log_vars
    d.eval()
    assert len(d.val_step(data)) == 2


def test_registered_in_mmengine_models():
    d = MODELS.build(
        dict(
            type="Distiller",
            teacher=teacher_model(),
            student=student_model(),
            driver=dict(type="pillar", example_inputs=batch()[0]),
            terms=tutorial_terms(alpha_at=1.0),
        )
    )
    assert isinstance(d, Distiller)
    assert d.distill_loss.terms["at"].weight == 1.0


# --- teacher checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["mmengine", "plain", "model_prefix", "module_prefix"])
def test_teacher_checkpoint_layouts_load(tmp_path, layout):
    trained = teacher_model(seed=11)
    state = trained.state_dict()
    ckpt = {
        "mmengine": {"state_dict": state, "meta": {"epoch": 3}},
        "plain": state,
        "model_prefix": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[layout]
    path = tmp_path / "teacher.pth"
    torch.save(ckpt, path)
    d = make_distiller(teacher=teacher_model(seed=1), teacher_ckpt=str(path))
    assert same_state(snapshot(d.teacher), state)
    report = d.teacher_load_report
    assert report.ok and report.matched == len(state)
    assert report.stripped_prefix == {"model_prefix": "model.", "module_prefix": "module."}.get(
        layout, ""
    )


def test_a_distiller_checkpoint_can_become_the_next_teacher(tmp_path):
    first = make_distiller()
    torch.save({"state_dict": first.state_dict()}, tmp_path / "distilled.pth")
    new_teacher = student_model(seed=5)  # same architecture as first.student
    report = load_weights(new_teacher, tmp_path / "distilled.pth")
    assert report.stripped_prefix == "student." and report.ok
    assert report.ignored == len([k for k in first.state_dict() if k.startswith("distill_loss.")])
    assert same_state(snapshot(new_teacher), snapshot(first.student))


def test_mismatched_teacher_checkpoint_names_keys_when_strict(tmp_path):
    wider = teacher_model(channels=(32, 96), neck_channels=64)
    torch.save({"state_dict": wider.state_dict()}, tmp_path / "wider.pth")
    with pytest.raises(TeacherCheckpointError) as info:
        make_distiller(teacher_ckpt=tmp_path / "wider.pth")
    message = str(info.value)
    assert "does not match the teacher config" in message
    assert "pts_backbone.stages.1.0.0.weight: [96, 32, 3, 3] vs [64, 32, 3, 3]" in message
    assert "driver=dict(strict_teacher=False)" in message


def test_mismatched_teacher_checkpoint_loads_partially_with_a_warning(tmp_path):
    wider = teacher_model(seed=11, channels=(32, 96), neck_channels=64)
    state = wider.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "wider.pth")
    with pytest.warns(UserWarning, match="teacher loaded partially"):
        d = make_distiller(teacher_ckpt=tmp_path / "wider.pth",
                           driver=dict(strict_teacher=False))
    report = d.teacher_load_report
    assert report.unexpected == ["extra.weight"] and report.mismatched
    loaded = d.teacher.state_dict()
    assert torch.equal(
        loaded["pts_backbone.stages.0.0.0.weight"], state["pts_backbone.stages.0.0.0.weight"]
    )


def test_missing_teacher_keys_are_an_error_when_strict(tmp_path):
    state = teacher_model().state_dict()
    del state["bbox_head.heatmap_head.bias"]
    with pytest.raises(TeacherCheckpointError, match="bbox_head.heatmap_head.bias"):
        make_distiller(teacher_ckpt=state)


def test_unrelated_checkpoint_is_always_an_error(tmp_path):
    with pytest.raises(TeacherCheckpointError, match="none of the 2 tensors"):
        make_distiller(
            teacher_ckpt={"a.weight": torch.zeros(1), "b": torch.ones(2)},
            driver=dict(strict_teacher=False),
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_distiller(teacher_ckpt=tmp_path / "nowhere.pth")
    torch.save({"meta": 1}, tmp_path / "meta_only.pth")
    with pytest.raises(TeacherCheckpointError, match="not tensors"):
        make_distiller(teacher_ckpt=tmp_path / "meta_only.pth")


def test_checkpoint_with_python_objects_needs_trust(tmp_path):
    state = teacher_model(seed=11).state_dict()
    torch.save(
        {"state_dict": state, "message_hub": {"log": os.stat_result(range(10))}},
        tmp_path / "runner.pth",
    )
    with pytest.raises(TeacherCheckpointError, match="Python objects besides tensors") as err:
        make_distiller(teacher_ckpt=tmp_path / "runner.pth")
    assert "trust" not in str(err.value) and "weights_only=False" not in str(err.value)
    d = make_distiller(teacher_ckpt=tmp_path / "runner.pth",
                       driver=dict(trust_teacher_ckpt=True))
    assert same_state(snapshot(d.teacher), state)


# --- export ---------------------------------------------------------------------------------------


def test_export_student_loads_into_the_student_alone(tmp_path):
    d = make_distiller()
    train_steps(d, steps=2)
    path = d.export_student(tmp_path / "out" / "student.pth", meta={"note": "test"})
    ckpt = torch.load(path, weights_only=True)  # plain tensors and primitives only
    fresh = student_model(seed=9)
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    assert same_state(snapshot(fresh), snapshot(d.student))
    assert ckpt["meta"]["student_class"] == "TinyBEVDetector"
    assert ckpt["meta"]["note"] == "test"
    assert os.listdir(path.parent) == ["student.pth"]  # no temporary file left behind
    assert path.stat().st_mode & 0o644 == 0o644


def test_export_is_atomic(tmp_path, monkeypatch):
    d = make_distiller()
    path = d.export_student(tmp_path / "student.pth")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):  # half a checkpoint, wherever it is written
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as handle:
                handle.write(b"half a checkpoint")
        else:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        d.export_student(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["student.pth"]


def test_deepcopy_keeps_the_teacher_outside():
    d = copy.deepcopy(make_distiller())
    assert "teacher" not in dict(d.named_modules())
    assert not d.teacher.training
    d.loss(*batch())


# --- the tutorial's build function and the project presets ----------------------------------------


def test_build_bevfusion_distillation_keeps_the_tutorial_signature(tmp_path):
    trained = teacher_model(seed=11)
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "t.pth")
    d = build_bevfusion_distillation(
        teacher_model(),
        student_model(),
        str(tmp_path / "t.pth"),
        driver=dict(example_inputs=batch()[0]),
        terms=tutorial_terms(contrastive="spatial", num_samples=32),
    )
    assert isinstance(d, Distiller)
    assert same_state(snapshot(d.teacher), trained.state_dict())
    assert "loss_crd.pts_neck" in d.loss(*batch(batch_size=1))


def test_lazy_exports():
    import bevdistill

    assert bevdistill.Distiller is Distiller
    assert bevdistill.build_bevfusion_distillation is build_bevfusion_distillation


def test_no_warnings_in_a_normal_step():
    d = make_distiller()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.train()
        d.loss(*batch())


# --- the real pillar detectors ---------------------------------------------------------------


def pillar_batch(seed: int = 0, batch_size: int = 2) -> tuple[dict, list[dict]]:
    """Random points in the small configs' range and two labelled boxes per sample."""
    inputs = example_inputs_for(
        build_detector(SMALL_STUDENT), batch_size, num_points=1500, seed=seed
    )
    boxes = torch.tensor(
        [[4.0, 2.0, -1.0, 4.2, 1.9, 1.6, 0.3], [-6.0, -3.0, -1.0, 0.8, 0.7, 1.7, 0.0]]
    )
    sample = dict(
        gt_boxes=boxes, gt_labels=torch.tensor([0, 1]), visible=torch.tensor([True, True])
    )
    return inputs, [copy.deepcopy(sample) for _ in range(batch_size)]


def test_pillar_detectors_distil_and_the_loss_falls():
    """Small PillarBEVDetector configs (the step-6 checker's): grids and channels differ."""
    torch.manual_seed(0)
    d = build_bevfusion_distillation(
        SMALL_TEACHER, SMALL_STUDENT, terms=tutorial_terms(contrastive="spatial", num_samples=64)
    )
    assert d.teacher.grid.bev_shape != d.student.grid.bev_shape
    inputs, samples = pillar_batch(seed=1)

    def distill_terms() -> dict[str, float]:
        d.train()  # batch statistics: what the student trains on (dropout acts on CRD only)
        torch.manual_seed(5)  # the same sampled cells each time
        with torch.no_grad():
            losses = d.loss(inputs, samples)
        return {
            k: float(v)
            for k, v in losses.items()
            if k.startswith(("loss_crd", "loss_at", "loss_kd"))
        }

    teacher_before = snapshot(d.teacher)
    start = distill_terms()
    optim = build_optim_wrapper(d, dict(optimizer=dict(type="AdamW", lr=3e-3)))
    for _ in range(8):
        d.train()
        losses = d.loss(inputs, samples)
        optim.update_params(sum(losses[k] for k in start))
    end = distill_terms()
    assert sum(end.values()) < 0.92 * sum(start.values())
    for key in ("loss_at.pts_backbone", "loss_at.pts_neck", "loss_kd.heatmap"):
        assert end[key] < 0.7 * start[key], (key, start[key], end[key])
    assert same_state(teacher_before, snapshot(d.teacher))


@pytest.mark.parametrize("teacher,student", [("teacher", "student")])
def test_presets_build_and_export(tmp_path, teacher, student):
    torch.manual_seed(0)
    trained = build_detector(teacher)
    torch.save({"state_dict": trained.state_dict(), "meta": {}}, tmp_path / "teacher.pth")
    d = build_bevfusion_distillation(teacher, student, tmp_path / "teacher.pth")
    assert d.teacher_load_report.ok
    assert d.teacher_channels["pts_neck"] > d.student_channels["pts_neck"]
    keys = set(d.state_dict())
    assert keys == {f"student.{k}" for k in d.student.state_dict()} | {
        f"distill_loss.{k}" for k in d.distill_loss.state_dict()
    }
    path = d.export_student(tmp_path / "student.pth")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["student_config"] == student
    build_detector(student).load_state_dict(ckpt["state_dict"], strict=True)


def test_mmengine_runner_trains_saves_and_keeps_the_teacher_out(tmp_path):
    from mmengine.runner import Runner

    inputs, samples = pillar_batch(seed=2, batch_size=4)
    dataset = [
        {"inputs": {"points": p}, "data_samples": s}
        for p, s in zip(inputs["points"], samples, strict=True)
    ]

    def collate(items):
        return {
            "inputs": {"points": [i["inputs"]["points"] for i in items]},
            "data_samples": [i["data_samples"] for i in items],
        }

    torch.manual_seed(0)
    model = Distiller(SMALL_TEACHER, SMALL_STUDENT)
    teacher_before = snapshot(model.teacher)
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=dataset,
            batch_size=2,
            collate_fn=collate,
            sampler=dict(type="DefaultSampler", shuffle=False),
        ),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3), clip_grad=dict(max_norm=10.0)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False),
            logger=dict(type="LoggerHook", interval=1),
        ),
        randomness=dict(seed=0),
        default_scope=None,
    )
    runner.train()
    assert not model.teacher.training and model.student.training
    assert same_state(teacher_before, snapshot(model.teacher))
    ckpt = torch.load(tmp_path / "iter_2.pth", map_location="cpu", weights_only=False)
    assert set(ckpt["state_dict"]) == set(model.state_dict())
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])


def test_each_model_reads_its_own_view():
    """A two-sensor batch: the teacher gets ``teacher_points``, the student ``points``."""
    seen: dict[str, int] = {}

    def spy(role):
        def hook(module, args, kwargs):
            seen[role] = sum(len(p) for p in args[0]["points"])
        return hook

    d = make_distiller()
    d.teacher.register_forward_pre_hook(spy("teacher"), with_kwargs=True)
    d.student.register_forward_pre_hook(spy("student"), with_kwargs=True)
    inputs, samples = batch()
    rich, _ = random_batch(batch_size=2, num_points=3000, grid=STUDENT_GRID, seed=5)
    two_view = {"points": inputs["points"], "teacher_points": rich["points"]}
    losses = d.loss(two_view, samples)
    assert seen == {"teacher": 6000, "student": 2000}
    assert all(torch.isfinite(v) for v in losses.values())
    d.eval()
    with torch.no_grad():
        d(two_view, samples, mode="predict")
    assert seen["student"] == 2000
    assert d.driver.view_of(inputs, "teacher") is inputs  # one-sensor batches pass unchanged


def test_drivers_are_chosen_by_name_and_an_unknown_one_is_named():
    from bevdistill.drivers import make_driver
    from bevdistill.drivers.pillar import PillarDriver

    assert type(make_driver(None)) is type(make_driver("fusion")) is PillarDriver
    assert make_driver(dict(type="pillar", select={"pts_neck": 0})).select_for(
        ["pts_backbone"]) == {"pts_neck": 0}
    assert make_driver("pillar").select_for(["pts_backbone"]) == {"pts_backbone": -1}
    with pytest.raises(ValueError, match=r"unknown driver 'voxel'; drivers: \['fusion', 'mmdet3d'"):
        make_driver("voxel")
    mine = PillarDriver()
    assert make_driver(mine) is mine
    with pytest.raises(TypeError, match="cannot be applied to a driver instance"):
        make_driver(mine, select={})
    with pytest.raises(TypeError, match="driver 'pillar'.*unexpected keyword argument 'selekt'"):
        make_distiller(driver=dict(selekt={}))


def test_dry_run_after_the_build_leaves_the_distillers_hooks_in_place():
    """dry_run reads the Distiller's own recorders: a fresh recorder would take their hooks over
    (with a warning), and loss() would then find no captured layer."""
    import warnings

    from bevdistill.capture import CaptureWarning

    d = make_distiller()
    inputs, samples = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureWarning)
        student, teacher = d.dry_run("student", inputs), d.dry_run("teacher", inputs)
    assert set(d.hook_points) <= set(student) and set(d.hook_points) <= set(teacher)
    assert all(not v.requires_grad for v in student.values() if isinstance(v, torch.Tensor))
    d.train()
    losses = d.loss(inputs, samples)
    assert set(d.loss_keys) <= set(losses)
    sum(v for k, v in losses.items() if "loss" in k).backward()
