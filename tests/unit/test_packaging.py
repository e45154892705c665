"""What the images and the demo's install install: the example trainers' imports, the operator image's dependency list."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from support.paths import REPO

EXAMPLES = REPO / "trainer_image" / "examples"
REQUIREMENTS = REPO / "trainer_image" / "requirements-examples.txt"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def _imported_top_level_modules() -> set[str]:
    modules = set()
    for path in EXAMPLES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__"}


def test_the_examples_extra_and_the_trainer_image_install_the_same_list():
    listed = [line.strip() for line in REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert sorted(_pyproject()["project"]["optional-dependencies"]["examples"]) == sorted(listed)
    assert "requirements-examples.txt" in (REPO / "trainer_image" / "Dockerfile").read_text()
    assert "requirements-examples.txt" in (REPO / "scripts" / "build-images.sh").read_text()


def test_every_package_an_example_trainer_imports_is_installed_by_the_demo():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    installed_by_demo = {_name(r) for r in project["dependencies"] + extras["torch"] + extras["examples"]}
    installed_by_demo.add("hpo-operator")  # hpo_trainer ships in this distribution
    owners = packages_distributions()
    missing = {}
    for module in _imported_top_level_modules():
        dists = {d.lower() for d in owners.get(module, [])}
        if not dists & installed_by_demo:
            missing[module] = sorted(dists) or ["(not installed here)"]
    assert not missing, f"example trainers import packages the demo's install lacks: {missing}"
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    # what scripts/demo.sh (bootstrap --no-test) installs
    demo_extras = re.search(r'^extras="([^"]*)"', bootstrap, re.M).group(1).split(",")
    assert {"torch", "examples"} <= set(demo_extras)


IMAGE_REQUIREMENTS = REPO / "operator" / "image_requirements.py"


def _image_requirements(pyproject: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(IMAGE_REQUIREMENTS), str(pyproject)],
                          capture_output=True, text=True, timeout=30)


def test_the_operator_image_installs_pyprojects_dependencies_and_build_requirements():
    project = _pyproject()
    printed = _image_requirements(REPO / "pyproject.toml")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == project["project"]["dependencies"] + project["build-system"]["requires"]
    # The Dockerfile's dependency stage and the wheel download read the list from this one script.
    assert "image_requirements.py" in (REPO / "operator" / "Dockerfile").read_text()
    assert "image_requirements.py" in (REPO / "scripts" / "build-images.sh").read_text()


def test_image_requirements_names_the_missing_table(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy"]\n')
    printed = _image_requirements(pyproject)
    assert printed.returncode != 0
    assert "'build-system'" in printed.stderr and "[build-system] requires" in printed.stderr
