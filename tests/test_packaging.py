"""The set-up files agree with each other: a learner on conda gets what pip users get."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_pip_lines() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml needs a pip: section installing the package"
    return pip_sections[0]


# Built by `make mmdet3d` (mmcv compiles from source), not by pip from environment.yml.
BUILT_BY_MAKE = {"mmdet3d"}


def test_environment_yml_installs_every_extra_of_pyproject():
    extras = set(_pyproject()["project"]["optional-dependencies"]) - BUILT_BY_MAKE
    install = [line for line in _conda_pip_lines() if re.match(r"-e\s+\.\[", line)]
    assert len(install) == 1, f"expected one '-e .[extras]' line, got {install}"
    named = set(re.search(r"\[(.*)\]", install[0]).group(1).split(","))
    assert named == extras, f"environment.yml installs extras {named}, pyproject.toml defines {extras}"


def test_torch_pin_is_the_same_in_conda_and_make():
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_SPEC \?= (\S+)", makefile, re.M).group(1)
    assert pin in _conda_pip_lines(), f"environment.yml should pin {pin} as the Makefile does"


def test_readme_commands_are_make_targets_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test", "lab", "demo"):
        assert f"make {target}" in readme, f"README should give `make {target}`"
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks a `{target}` target"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_top_level_layout_is_the_agreed_one():
    allowed = {
        "book", "notebooks", "bevdistill", "tests", "_config.yml", "_toc.yml", "environment.yml",
        "README.md", "pyproject.toml", "Makefile", ".ci", "benchmarks", "configs",
        ".gitignore", ".git", "LICENSE",
    }
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {p.split("/")[0] for p in tracked}
    assert top <= allowed, f"unexpected top-level entries: {sorted(top - allowed)}"


def test_mmdet3d_extra_is_installed_by_make_and_named_in_environment_yml():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^mmdet3d: ", makefile, re.M), "Makefile needs an `mmdet3d` target"
    assert '".[mmdet3d]"' in makefile, "`make mmdet3d` must install the pyproject extra"
    assert "make mmdet3d" in (ROOT / "environment.yml").read_text(), (
        "environment.yml should tell conda users to run `make mmdet3d` for the mmdet3d extra"
    )
