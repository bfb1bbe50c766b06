"""The set-up files agree with each other: a learner on conda gets what pip users get."""

from __future__ import annotations

import re
import shlex
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


def test_torch_and_core_pins_are_the_same_in_conda_and_make():
    makefile = (ROOT / "Makefile").read_text()
    pins = [re.search(r"^TORCH_SPEC \?= (\S+)", makefile, re.M).group(1),
            *re.search(r"^CORE_PINS := (.*)$", makefile, re.M).group(1).split()]
    for pin in pins:
        assert pin in _conda_pip_lines(), f"environment.yml should pin {pin} as the Makefile does"


def test_readme_commands_are_make_targets_and_ci_runs_lint_book_and_tests():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test", "lab", "demo", "lint"):
        assert f"make {target}" in readme, f"README should give `make {target}`"
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks a `{target}` target"
    ci = (ROOT / ".ci" / "run").read_text()
    steps = re.findall(r"^step make (\w+)$", ci, re.M)
    assert steps == ["lint", "book", "test"], f".ci/run runs {steps}"
    assert re.search(r"^book:.*\n(\t.*\n)*\t.*jupyter-book build .* --warningiserror", makefile,
                     re.M), "`make book` must turn Sphinx warnings into errors"


def test_no_test_is_rerun_by_a_global_pytest_option():
    # only a notebook cell timeout reruns (tests/notebook_reruns.py); a global --reruns or
    # --only-rerun would rerun failing tests and notebooks too
    test_recipe = re.search(r"^test:.*\n((\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "pytest" in test_recipe and "rerun" not in test_recipe, test_recipe
    assert "rerun" not in _pyproject()["tool"]["pytest"]["ini_options"].get("addopts", "")


PINNED = re.compile(r"[A-Za-z0-9_.\-]+(\[[\w,]+\])?==[\w.+]+")


def test_every_extra_is_pinned():
    for extra, requirements in _pyproject()["project"]["optional-dependencies"].items():
        for requirement in requirements:
            assert PINNED.fullmatch(requirement), f"extra {extra!r}: pin {requirement!r} (==)"


def _pip_commands(makefile: str) -> list[list[str]]:
    """Every pip install/wheel command of the Makefile, its variables expanded, as words."""
    text = makefile.replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+) *[:?]?= *(.*)$", text, re.M))
    for _ in range(3):
        text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
    while "$(" in text:  # what is left: make functions (paths), innermost first
        text = re.sub(r"\$\([^()]*\)", "MAKE", text)
    commands = []
    for line in text.splitlines():
        for part in line.split(";"):
            match = re.search(r"\bpip (install|wheel) (.*)", part)
            if match:
                commands.append(shlex.split(match.group(2)))
    return commands


def test_every_make_install_is_pinned():
    commands = _pip_commands((ROOT / "Makefile").read_text())
    assert len(commands) >= 6, commands
    with_value = {"--find-links", "--wheel-dir", "--index-url", "-w"}
    for words in commands:
        skip = False
        for i, word in enumerate(words):
            if skip:
                skip = False
            elif word in with_value:
                skip = True
            elif word == "-e":
                assert re.fullmatch(r"\.\[[\w,-]+\]", words[i + 1]), words  # extras: pinned above
                skip = True
            elif word.startswith("-"):
                assert word in ("--quiet", "--no-deps", "--no-build-isolation"), (
                    f"{word} in `pip {' '.join(words)}`: installs must not float")
            else:
                assert PINNED.fullmatch(word), f"`pip ... {' '.join(words)}`: pin {word!r} (==)"


def test_license_is_an_spdx_expression_the_build_backend_reads():
    project = _pyproject()
    assert project["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    (setuptools,) = project["build-system"]["requires"]
    version = re.fullmatch(r"setuptools==(\d+)\.[\d.]+", setuptools)
    assert version and int(version.group(1)) >= 77, (
        f"{setuptools}: pin a setuptools that reads SPDX license expressions (>= 77)")


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
