"""The Results chapter states no number it does not read from the result files, and the summary
schema check accepts a complete row, reports the fields older rows lack and rejects wrong ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bevdistill.viz import findings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GLUE = re.compile(r"\{glue:text\}`([A-Za-z_0-9]+)(?::[^`]*)?`")
# A figure typed into prose: a decimal, a percentage or a signed number ("16-beam" is a name).
FIGURE = re.compile(r"(?<![\w.-])[+±−-]?\d*\.\d+|\d+(?:\.\d+)?\s?%|(?<![\w-])[+±−]\d+")


def _prose(page: str) -> str:
    """The page's text without its code cells, front matter, inline code and roles' targets."""
    page = re.sub(r"^---\n.*?\n---\n", "", page, flags=re.S)
    page = re.sub(r"```.*?```", "", page, flags=re.S)
    page = GLUE.sub("GLUED", page)
    page = re.sub(r"\{[a-z:]+\}`[^`]*`", "", page)  # citations and other roles
    return re.sub(r"`[^`]*`", "", page)  # commands and names


def typed_figures(page: str) -> list[str]:
    return FIGURE.findall(_prose(page))


def unknown_glue(page: str, numbers: dict) -> list[str]:
    return sorted(set(GLUE.findall(page)) - set(numbers))


def test_the_results_chapter_types_no_figure_and_glues_only_known_numbers():
    page = (ROOT / "book" / "results.md").read_text()
    numbers = findings.results_numbers()
    assert typed_figures(page) == [], "type no figure: glue it from findings.results_numbers()"
    assert unknown_glue(page, numbers) == []
    assert len(GLUE.findall(page)) >= 20  # the prose does state numbers, all of them glued
    assert "findings.glue_numbers()" in page


def test_the_prose_check_catches_typed_and_unknown_numbers():
    numbers = {"gain": 0.05}
    assert typed_figures("It gains +0.049, 16% of the gap.") == ["+0.049", "16%"]
    assert typed_figures("ends at .38 against 0.379") == [".38", "0.379"]
    assert typed_figures("The 16-beam student, step 5, {glue:text}`gain:+.3f`.") == []
    assert typed_figures("```{code-cell}\nx = 0.5\n```\n`--iters 2000 0.5`") == []
    assert unknown_glue("{glue:text}`gain:.3f` and {glue:text}`gian:.3f`", numbers) == ["gian"]


def test_results_numbers_are_the_files_values():
    numbers = findings.results_numbers()
    scratch = json.loads((RESULTS / "distill_gain_scratch.json").read_text())
    main = json.loads((RESULTS / "distill_gain.json").read_text())
    rows = {(r["scenario"], r["option"], r["budget"], r["split"]): r for r in scratch["summary"]}
    taught = rows["two_sensor", "combined", "converged", "test"]
    assert numbers["taught_end_gain"] == taught["gain"]
    assert numbers["taught_end_rec"] == taught["gap_recovered"]
    assert numbers["taught_equal_gain"] == rows["two_sensor", "combined", "equal", "test"]["gain"]
    assert numbers["teacher_map"] == scratch["scenarios"]["two_sensor"]["teacher"]["test"]["mAP"]
    best = main["scenarios"]["two_sensor"]["best_option"]
    (row,) = [r for r in main["summary"] if r["scenario"] == "two_sensor" and r["option"] == best
              and r["budget"] == "converged" and r["split"] == "test"]
    assert numbers["best_end_rec"] == row["gap_recovered"]
    assert numbers["goal_share"] == main["goal"]["gap_recovered_at_least"]
    fair = {r["option"]: r for r in main["summary"] if r["scenario"] == findings.FAIR_SCENARIO
            and r["split"] == "test"}
    assert numbers["fair_taught_rec"] == fair["combined"]["gap_recovered"]
    assert numbers["fair_taught_map"] == fair["combined"]["mAP_mean"]
    assert numbers["fair_pl_map"] == fair["pseudo_label"]["mAP_mean"]
    assert numbers["fair_cm_iters"] == fair["baseline_compute_matched"]["iters"]
    with pytest.raises(KeyError, match="the file has"):
        findings.summary_row(main, "two_sensor", "no_such_option", "converged")


def _complete_row(**changes) -> dict:
    row = {"scenario": "two_sensor", "option": "combined", "split": "test", "budget": "plateau",
           "terms": ["loss_crd.pts_neck", "loss_at.pts_backbone", "loss_kd.heatmap"],
           "seeds": [0, 1, 2], "mAP_mean": 0.45, "seed_spread": 0.01, "gain": 0.06,
           "gap_recovered": 0.55, "gain_vs_compute_matched": 0.04,
           "spread_vs_compute_matched": 0.01}
    return {**row, **changes}


def test_check_summary_accepts_complete_rows_and_reports_missing_fields():
    report = findings.check_summary({"summary": [_complete_row()]}, strict=True)
    assert report.ok and len(report.complete) == 1 and not report.missing
    old = {k: v for k, v in _complete_row().items()
           if k not in ("terms", "gain_vs_compute_matched", "spread_vs_compute_matched")}
    report = findings.check_summary({"summary": [old, _complete_row()]})
    assert report.ok and len(report.complete) == 1
    assert report.missing == {"terms": 1, "gain_vs_compute_matched": 1,
                              "spread_vs_compute_matched": 1}
    assert "`terms` (1 rows)" in report.markdown()
    with pytest.raises(ValueError, match="gain_vs_compute_matched"):
        findings.check_summary({"summary": [old]}, strict=True)


@pytest.mark.parametrize("change", [
    {"split": "held-out"}, {"terms": ["crd.pts_neck"]}, {"terms": "loss_kd.heatmap"},
    {"seeds": []}, {"mAP_mean": 1.5}, {"seed_spread": -0.01}, {"gain": None},
    {"spread_vs_compute_matched": -1.0}, {"budget": ""},
])
def test_check_summary_rejects_wrong_values(change):
    report = findings.check_summary({"summary": [_complete_row(**change)]})
    assert not report.ok and not report.complete
    assert next(iter(change)) in report.wrong[0]


def test_the_current_file_lacks_only_the_fields_of_the_next_benchmark():
    report = findings.check_summary("distill_gain")
    assert report.ok, report.wrong[:3]
    assert set(report.missing) <= {"terms", "gain_vs_compute_matched", "spread_vs_compute_matched"}
    with pytest.raises(ValueError, match="summary"):
        findings.check_summary({"runs": []})


def test_goal_status_reads_complete_held_out_plateau_rows():
    goal = {"gap_recovered_at_least": 0.5}
    assert findings.goal_status({"goal": goal, "summary": []}).startswith("Not measured yet")
    met = findings.goal_status({"goal": goal, "summary": [_complete_row()]})
    assert met.startswith("Met by: combined")
    short = _complete_row(gap_recovered=0.3)
    assert "recovers 30%" in findings.goal_status({"goal": goal, "summary": [short]})
    not_fair = _complete_row(gain_vs_compute_matched=0.01)  # not above twice its spread
    assert findings.goal_status({"goal": goal, "summary": [not_fair]}).startswith("Not met")
    one_seed = _complete_row(seeds=[0], seed_spread=0.0, spread_vs_compute_matched=0.0)
    assert findings.goal_status({"goal": goal, "summary": [one_seed]}).startswith("Not met")
    tuning = _complete_row(split="val")
    assert findings.goal_status({"goal": goal, "summary": [tuning]}).startswith("Not measured")


def test_the_taught_loss_is_read_from_the_newest_file_that_holds_it(monkeypatch):
    assert findings.taught_loss_source() == "distill_gain_scratch"  # distill_gain has no combined
    curves = {"two_sensor": {o: {} for o in ("baseline", "combined", "mse_kd", "pseudo_label")}}
    assert findings.compared_options({"curves": curves}) == ["baseline", "combined", "pseudo_label"]
    later = {"summary": [_complete_row()], "curves": curves}
    monkeypatch.setattr(findings, "load_benchmark", lambda name: later)
    assert findings.taught_loss_source() == "distill_gain"  # the later runs take over
    monkeypatch.setattr(findings, "load_benchmark", lambda name: {"summary": []})
    with pytest.raises(KeyError, match="--options combined"):
        findings.taught_loss_source()


def test_a_gain_is_called_ahead_only_beyond_twice_its_spread():
    from bevdistill.viz.findings import _versus

    assert _versus(0.05, 0.02).startswith("ahead by +0.050")
    assert _versus(0.03, 0.02).startswith("+0.030, within")
    assert _versus(-0.05, 0.02).startswith("behind by -0.050")


def test_the_fusion_scenario_is_told_from_the_file_without_the_labels_words():
    """fusion_to_lidar has every scene labelled: its fair paragraph states the file's figures
    and none of the scarce-labels scenario's words about labelled scenes and unlabelled scans."""
    main = json.loads((RESULTS / "distill_gain.json").read_text())
    assert main["scenarios"][findings.FUSION_SCENARIO]["protocol"] == "fair"
    with pytest.raises(KeyError, match="not run under the fair protocol"):
        findings.fair_numbers(main, "two_sensor")  # run before the fair protocol
    numbers = findings.fair_numbers(main, findings.FUSION_SCENARIO)
    rows = {r["option"]: r for r in main["summary"]
            if r["scenario"] == findings.FUSION_SCENARIO and r["split"] == "test"}
    assert numbers["taught_map"] == rows["combined"]["mAP_mean"]
    assert numbers["alone_map"] == rows["baseline"]["mAP_mean"]
    assert numbers["labelled"] is None and "pl_map" not in numbers
    text = findings.fair_markdown(main, findings.FUSION_SCENARIO)
    assert f"{numbers['taught_map']:.3f}" in text and f"{numbers['cm_iters']} iterations" in text
    assert "labelled scenes" not in text and "without labels" not in text
