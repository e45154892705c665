"""What the example trainers import is what the demo's install and the trainer image install."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

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
