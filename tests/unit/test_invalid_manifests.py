"""The corpus of invalid manifests: each is refused, and the message names the field.

The same files run against the real API server in the integration tier
(the CRD schema refuses what it can express; the operator the rest).
"""

from __future__ import annotations

import pytest

from hpo_operator.spec import ManifestError, load_experiment

from support.paths import REPO

CORPUS = sorted((REPO / "tests" / "data" / "invalid_manifests").glob("*.yaml"))


def expected(path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <field>'"
    return first.removeprefix("# expect: ").strip()


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_invalid_manifest_is_refused_naming_the_field(path):
    with pytest.raises(ManifestError) as err:
        load_experiment(path)
    assert any(expected(path) in problem for problem in err.value.problems), err.value.problems
