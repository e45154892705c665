"""The committed CRDs are generated from the models and agree with them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from hpo_operator.cli.crds import render

from support.paths import REPO


def test_committed_crds_are_not_stale():
    result = subprocess.run([sys.executable, "-m", "hpo_operator.cli.main", "crds", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + " (run `hpo crds` and commit the result)"


def test_helm_chart_carries_the_same_crds():
    chart = REPO / "helm" / "hpo-operator" / "crds"
    for name, text in render().items():
        assert (chart / name).read_text() == text


def test_check_fails_when_the_charts_copy_is_missing(tmp_path):
    """A renamed or deleted chart is a stale copy, not one to skip."""
    for part in ("pyproject.toml", "crds", "docs/manifest.md"):
        src, dst = REPO / part, tmp_path / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    check = [sys.executable, "-m", "hpo_operator.cli.main", "crds", "--check"]
    result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "helm/hpo-operator/crds/" in result.stderr, result.stderr
    (tmp_path / "helm/hpo-operator").mkdir(parents=True)
    shutil.copytree(REPO / "crds", tmp_path / "helm/hpo-operator/crds")
    result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            yield from _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}.*")


def test_schemas_are_structural():
    for name, text in render().items():
        crd = yaml.safe_load(text.split("\n", 1)[1])
        version = crd["spec"]["versions"][0]
        assert crd["spec"]["names"]["categories"] == ["hpo"]
        assert version["subresources"] == {"status": {}}
        for path, node in _walk(version["schema"]["openAPIV3Schema"]):
            assert not ({"$ref", "anyOf", "oneOf", "allOf", "const"} & set(node)), (name, path)
            typed = "type" in node or node.get("x-kubernetes-int-or-string") or \
                node.get("x-kubernetes-preserve-unknown-fields")
            assert typed, (name, path)
