"""The README's main command prints every loss for BEV-shaped teacher and student models."""

import math

from bevdistill.demo import main, run


def test_demo_computes_every_loss_term_finite(capsys):
    losses = run(batch_size=2, seed=0)
    expected = [
        "global InfoNCE", "spatial InfoNCE", "attention transfer (L2", "attention transfer (tutorial",
        "heatmap response KD", "Distiller loss_crd.pts_neck", "Distiller loss_at.pts_backbone",
        "Distiller loss_kd.heatmap", "Distiller loss_heatmap",
    ]
    for prefix in expected:
        assert any(k.startswith(prefix) for k in losses), f"demo lacks a '{prefix}' term"
    assert all(math.isfinite(v) for v in losses.values())
    # The demo exists to show the tutorial's attention loss is vanishingly small next to ours.
    ours = next(v for k, v in losses.items() if k.startswith("attention transfer (L2"))
    tutorial = next(v for k, v in losses.items() if k.startswith("attention transfer (tutorial"))
    assert tutorial < 1e-3 * ours
    printed = capsys.readouterr().out
    assert "pts_backbone" in printed and "tuple(" in printed


def test_demo_cli_runs(capsys):
    assert main(["--batch-size", "1"]) == 0
    assert "losses" in capsys.readouterr().out
