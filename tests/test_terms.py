"""Distillation terms composed in config: a loss defined outside the package joins a recipe
through a config file alone, and the term machinery refuses bad configs with the fix."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import MODELS

from bevdistill.distiller import DistillerBuildError
from bevdistill.engine.runner import EXPERIMENT_DIR, load_experiment, make_runner, register_modules
from bevdistill.losses.combined import BEVFusionDistillationLoss
from bevdistill.losses.terms import (
    DistillationTerms,
    MissingFeatureError,
    TermConfigError,
    WeightSchedule,
)

# A KL term on the neck, written as a user would: its own module, registered in mmengine's MODELS.
NECK_KL_MODULE = '''
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn


@MODELS.register_module()
class ExternalNeckKL(nn.Module):
    """KL(teacher || student) of the per-cell channel distributions, at temperature tau."""

    def __init__(self, tau=2.0):
        super().__init__()
        self.tau = tau

    def forward(self, student, teacher):
        s = F.log_softmax(student / self.tau, dim=1)
        t = F.softmax(teacher / self.tau, dim=1)
        return F.kl_div(s, t, reduction="none").sum(1).mean() * self.tau ** 2
'''


@pytest.fixture
def external_kl_config(tmp_path, monkeypatch):
    """A config file that adds the external KL term, on the neck only, to the CI distillation."""
    (tmp_path / "neck_kl_term.py").write_text(NECK_KL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "distill_with_kl.py"
    config.write_text(textwrap.dedent(f'''
        _base_ = ["{EXPERIMENT_DIR / 'distill_ci.py'}"]
        custom_imports = dict(imports=["neck_kl_term"], allow_failed_imports=False)
        model = dict(
            # the student's neck is narrower than the teacher's: a 1x1 connector maps it across
            terms=[dict(name="kl", loss=dict(type="ExternalNeckKL", tau=2.0), layers=["pts_neck"],
                        student_connector=dict(type="SpatialProjector", out_dim=32,
                                               normalize=False),
                        teacher_connector=dict(type="SpatialProjector", out_dim=32,
                                               normalize=False),
                        weight=0.5)],
        )
    '''))
    yield config
    sys.modules.pop("neck_kl_term", None)
    MODELS.module_dict.pop("ExternalNeckKL", None)


def test_an_external_loss_joins_through_a_config_alone_and_trains(external_kl_config, tmp_path):
    exp = load_experiment(external_kl_config)
    runner = make_runner(exp, tmp_path / "run", max_iters=2)
    distiller = runner.model
    assert "loss_kl.pts_neck" in distiller.loss_keys
    assert [k for k in distiller.loss_keys if k.startswith("loss_kl")] == ["loss_kl.pts_neck"]
    kl_params = list(distiller.distill_loss.terms["kl"].parameters())
    before = [p.detach().clone() for p in kl_params]
    runner.train()
    logged = [json.loads(line) for line in
              next((tmp_path / "run").rglob("scalars.json")).read_text().splitlines()]
    assert any("loss_kl.pts_neck" in row for row in logged), logged
    assert all(torch.isfinite(torch.tensor(row["loss_kl.pts_neck"]))
               for row in logged if "loss_kl.pts_neck" in row)
    # the term's connectors are trained with the student
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, kl_params, strict=True))


def test_the_same_config_without_the_import_names_the_registry(tmp_path):
    config = tmp_path / "distill_unknown.py"
    config.write_text(
        f'_base_ = ["{EXPERIMENT_DIR / "distill_ci.py"}"]\n'
        'model = dict(terms=[dict(name="kl", loss=dict(type="NoSuchLoss"), layers=["pts_neck"])])\n'
    )
    register_modules()
    with pytest.raises(DistillerBuildError, match="no module named 'NoSuchLoss'.*register_module"):
        MODELS.build(load_experiment(config).model)


def test_every_layer_a_term_reads_is_hooked_and_only_those():
    register_modules()
    cfg = load_experiment("distill_ci").model
    cfg.terms = [dict(name="at", loss=dict(type="AttentionTransferLoss"), layers=["pts_backbone"]),
                 dict(name="neck_mse", loss=dict(type="FeatureMSELoss"), layers=["pts_neck"])]
    distiller = MODELS.build(cfg)
    assert distiller.hooks["student"] == distiller.hooks["teacher"] == ("pts_backbone", "pts_neck")
    assert distiller.loss_keys == ("loss_at.pts_backbone", "loss_neck_mse.pts_neck")


def test_the_old_recipe_keys_are_converted_with_the_new_keys_named():
    """distill=dict(alpha_*), hook_points and kd_hook edit the shipped terms as they edited the
    recipe before, and the warning names the --cfg-options keys to write instead."""
    from warnings_support import reset_warnings

    register_modules()
    reset_warnings()
    cfg = load_experiment("distill_ci", {"model.distill.alpha_at": 3.0,
                                         "model.distill.contrastive": "none",
                                         "model.hook_points": ["pts_neck"]}).model
    with pytest.warns(FutureWarning, match=r"model\.terms\.1\.weight=3\.0.*model\.terms\.0\.layers"):
        distiller = MODELS.build(cfg)
    at = distiller.distill_loss.terms["at"]
    assert at.weight == 3.0 and at.layers == ("pts_neck",)
    assert "crd" not in distiller.distill_loss.terms  # contrastive='none': weight 0, not built
    assert distiller.loss_keys == ("loss_at.pts_neck", "loss_kd.heatmap")
    reset_warnings()


def test_an_unknown_old_key_names_the_recipe_language():
    from bevdistill.errors import ExperimentConfigError

    register_modules()
    with pytest.raises(ExperimentConfigError, match=r"model.distill.alpha_zz'; did you mean"):
        load_experiment("distill_ci", {"model.distill.alpha_zz": 1.0})  # the config check
    cfg = load_experiment("distill_ci", {"model.distill.alpha_kd": 1.0}).model
    cfg.distill["alpha_zz"] = 1.0  # past the config check: the Distiller's conversion says it
    with pytest.raises(TermConfigError, match=r"unknown keys \[.alpha_zz.\]; write the recipe as terms"):
        MODELS.build(cfg)


def _maps(channels, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(2, c, size, size, generator=g) for k, c in channels.items()}


def test_student_and_teacher_layers_may_differ():
    s_ch, t_ch = {"neck": 8}, {"late_neck": 12}
    terms = DistillationTerms([dict(
        name="mse", loss=dict(type="FeatureMSELoss"),
        layers=[dict(student="neck", teacher="late_neck", label="neck")])], s_ch, t_ch)
    out = terms(_maps(s_ch), _maps(t_ch, seed=1))
    assert list(out) == ["loss_mse.neck"] and out["loss_mse.neck"] > 0


def test_layer_and_term_weights_multiply_and_zero_builds_nothing():
    ch = {"a": 4, "b": 4}
    one = DistillationTerms([dict(name="at", loss=dict(type="AttentionTransferLoss"),
                                  layers=["a"])], ch, ch)
    weighted = DistillationTerms([dict(name="at", loss=dict(type="AttentionTransferLoss"),
                                       layers=[dict(student="a", weight=3.0),
                                               dict(student="b", weight=0.0)], weight=0.5)],
                                 ch, ch)
    s, t = _maps(ch), _maps(ch, seed=1)
    assert list(weighted(s, t)) == ["loss_at.a"]
    assert torch.allclose(weighted(s, t)["loss_at.a"], 1.5 * one(s, t)["loss_at.a"])
    off = DistillationTerms([dict(name="mse", loss=dict(type="FeatureMSELoss"), layers=["a"],
                                  weight=0.0)], ch, ch)
    assert off(s, t) == {} and not list(off.parameters())


def test_a_schedule_warms_up_then_decays_with_the_runner_iteration():
    schedule = WeightSchedule(warmup_iters=10, decay_begin=20, decay_end=30, final=0.0)
    assert schedule.factor(0) == pytest.approx(0.1)
    assert schedule.factor(9) == schedule.factor(15) == 1.0
    assert schedule.factor(25) == pytest.approx(0.5) and schedule.factor(40) == 0.0
    ch = {"a": 4}
    terms = DistillationTerms([dict(name="at", loss=dict(type="AttentionTransferLoss"),
                                    layers=["a"], schedule=dict(warmup_iters=4))], ch, ch)
    s, t = _maps(ch), _maps(ch, seed=1)
    hub = MessageHub.get_current_instance()
    hub.update_info("iter", 3)
    full = terms(s, t)["loss_at.a"]
    hub.update_info("iter", 1)
    assert torch.allclose(terms(s, t)["loss_at.a"], 0.5 * full)
    hub.update_info("iter", 0)


@pytest.mark.parametrize("spec, message", [
    (dict(name="kl", loss=dict(type="AttentionTransferLoss"), layers="a"), "non-empty list"),
    (dict(name="kl", loss=dict(type="AttentionTransferLoss"), layers=["zzz"]),
     "reads student layer 'zzz', which is not captured"),
    (dict(name="kl", loss=dict(type="AttentionTransferLoss"), layers=["a"], weight=-1),
     "weight must be a number >= 0"),
    (dict(name="kl", loss=dict(type="AttentionTransferLoss"), layers=["a"],
          schedule=dict(decay_begin=5)), "decay_begin < decay_end"),
    (dict(name="k-l", loss=dict(type="AttentionTransferLoss"), layers=["a"]), "identifier"),
    (dict(name="kl", loss=dict(type="AttentionTransferLoss", nonsense=1), layers=["a"]),
     "AttentionTransferLoss.*failed"),
    (dict(loss=dict(type="AttentionTransferLoss"), layers=["a"]), "a term is dict"),
])
def test_bad_term_configs_are_refused_with_the_fix(spec, message):
    with pytest.raises(TermConfigError, match=message):
        DistillationTerms([spec], {"a": 4}, {"a": 4})


def test_a_term_names_the_missing_feature():
    ch = {"a": 4}
    terms = DistillationTerms([dict(name="at", loss=dict(type="AttentionTransferLoss"),
                                    layers=["a"])], ch, ch)
    with pytest.raises(MissingFeatureError, match=r"teacher features have no 'a'"):
        terms(_maps(ch), {})


def test_the_tutorial_loss_is_built_on_terms_and_keeps_its_keys():
    ch = {"pts_neck": 8}
    loss = BEVFusionDistillationLoss(ch, ch, feat_dim=4, hidden_dim=8, alpha_mse=1.0,
                                     terms=[dict(name="extra", loss=dict(type="FeatureMSELoss"),
                                                 layers=["pts_neck"], weight=2.0)])
    assert set(loss.terms) == {"crd", "at", "mse", "kd", "extra"}
    out = loss(_maps(ch), _maps(ch, seed=1), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    assert set(out) == {"loss_crd.pts_neck", "loss_at.pts_neck", "loss_mse.pts_neck",
                        "loss_kd.heatmap", "loss_extra.pts_neck"}
    assert set(out) == set(loss.loss_keys)
    assert torch.allclose(out["loss_extra.pts_neck"] / 2.0,
                          loss.terms["extra"].losses["pts_neck"](*[_maps(ch)["pts_neck"],
                                                                   _maps(ch, seed=1)["pts_neck"]]))


def test_the_tutorial_loss_schedule_fades_every_alpha_term_and_spares_extra_terms():
    """schedule= decays the alpha_* terms (imitation early, labels alone late); a term of one's
    own keeps its own schedule."""
    ch = {"pts_neck": 8}
    loss = BEVFusionDistillationLoss(
        ch, ch, feat_dim=4, hidden_dim=8, alpha_mse=1.0,
        schedule=dict(decay_begin=10, decay_end=20, final=0.0),
        terms=[dict(name="extra", loss=dict(type="FeatureMSELoss"), layers=["pts_neck"])])
    args = (_maps(ch), _maps(ch, seed=1), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    hub = MessageHub.get_current_instance()
    try:
        hub.update_info("iter", 5)
        full = loss(*args)
        hub.update_info("iter", 15)
        half = loss(*args)
        hub.update_info("iter", 25)
        done = loss(*args)
    finally:
        hub.update_info("iter", 0)
    for key in ("loss_at.pts_neck", "loss_mse.pts_neck", "loss_kd.heatmap"):
        assert full[key] > 0 and torch.allclose(half[key], 0.5 * full[key]), key
        assert done[key] == 0, key
    assert torch.allclose(done["loss_extra.pts_neck"], full["loss_extra.pts_neck"])
    with pytest.raises(TermConfigError, match="decay_begin < decay_end"):
        BEVFusionDistillationLoss(ch, ch, feat_dim=4, hidden_dim=8, schedule=dict(decay_begin=5))


def test_foreground_weighting_by_the_teacher_heatmap_changes_only_masked_terms():
    register_modules()
    cfg = load_experiment("distill_ci").model
    for term in cfg.terms:  # feature MSE (takes the mask) and heatmap KD (does not)
        term.weight = {"mse": 10.0, "kd": 5.0}.get(term.name, 0.0)
    losses = {}
    for foreground in (None, "teacher_heatmap"):
        torch.manual_seed(0)
        distiller = MODELS.build({**cfg, "foreground": foreground})
        distiller.eval()
        batch = distiller.driver.dry_inputs(distiller.student, distiller.teacher)
        s, t = distiller.dry_run("student", batch), distiller.dry_run("teacher", batch)
        losses[foreground] = distiller.distill_loss(s, t, mask=distiller._foreground(t))
    assert torch.allclose(losses[None]["loss_kd.heatmap"], losses["teacher_heatmap"]["loss_kd.heatmap"])
    assert not torch.allclose(losses[None]["loss_mse.pts_neck"],
                              losses["teacher_heatmap"]["loss_mse.pts_neck"])


def test_a_term_declares_whether_its_loss_takes_the_mask():
    """mask=True hands the loss the foreground; mask=False never does (a loss without a mask
    parameter, like the external KL, is called as loss(s, t))."""
    calls = []

    class Recording(torch.nn.Module):
        def forward(self, student, teacher, **kwargs):
            calls.append(sorted(kwargs))
            return (student - teacher).pow(2).mean()

    ch = {"a": 4}
    fg = torch.rand(2, 8, 8)
    for mask in (False, True):
        terms = DistillationTerms([dict(name="r", loss=Recording(), layers=["a"], mask=mask)],
                                  ch, ch)
        terms(_maps(ch), _maps(ch, seed=1), mask=fg)
    assert calls == [[], ["mask"]]


def test_foreground_needs_a_known_mode():
    register_modules()
    cfg = load_experiment("distill_ci").model
    with pytest.raises(ValueError, match="foreground must be None or 'teacher_heatmap'"):
        MODELS.build({**cfg, "foreground": "boxes"})
