"""The invalid-manifest corpus against a real API server with the operator running.

Plain functions, shared by the integration test and the reliability report:
apply one corpus file with kubectl, then classify what became of it:

- ``refused-by-schema``: ``kubectl apply`` failed (CRD schema or name validation);
- ``refused-by-operator``: stored, then failed by the operator (reason InvalidSpec or
  InvalidTrialTemplate) with a Succeeded=False condition and a Warning Event;
- ``failed-without-notice``: failed so, but the condition or the Warning Event is missing;
- ``not-refused``: stored and accepted; a user would not learn what is wrong.

Each outcome carries the message a user sees, so a caller can check it names the field.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from kubernetes import client

from hpo_operator import resources
from hpo_operator.controller.builders import LABEL_EXPERIMENT
from support.kube_tools import kubectl
from support.paths import REPO

CORPUS_DIR = REPO / "tests" / "data" / "invalid_manifests"
REFUSED_BY_SCHEMA = "refused-by-schema"
REFUSED_BY_OPERATOR = "refused-by-operator"
NOT_REFUSED = "not-refused"
FAILED_WITHOUT_NOTICE = "failed-without-notice"
STORED = "stored"  # applied; the operator has not been asked yet (see classify)
OPERATOR_REASONS = ("InvalidSpec", "InvalidTrialTemplate")
GROUP, VERSION = resources.GROUP, resources.VERSION


@dataclass
class Outcome:
    file: str  # the corpus file's stem
    name: str  # the experiment's name on the server
    expect: str  # the field the message must name
    verdict: str
    message: str = ""  # what kubectl printed, or the experiment's status message
    reason: Optional[str] = None  # the experiment's status.reason
    condition: Optional[dict] = None  # the Succeeded condition
    events: list[str] = field(default_factory=list)  # Warning Event messages on the experiment
    trials: int = 0  # HPOTrial objects created for it
    pods: int = 0  # pods created for it

    @property
    def names_field(self) -> bool:
        """The message names the expected field, as a dotted path or in kubectl's own validation format."""
        path = self.expect.split(": ")[0]  # "spec.x.type: required" -> the field "spec.x.type"
        return path in self.message or path in fields_named(self.message)


# kubectl's client-side validation (used where the API server has no server-side field
# validation, as on 1.20) names a field as its parent object plus the key:
#   ValidationError(HPOExperiment.spec.budget): unknown field "maxTrails" in ...
_KUBECTL_FIELD = re.compile(r'ValidationError\(\w+\.([^)]+)\):(?: (?:missing required|unknown) field "([^"]+)")?')


def fields_named(message: str) -> list[str]:
    """The dotted field paths a kubectl validation message names."""
    return [f"{parent}.{key}" if key else parent for parent, key in _KUBECTL_FIELD.findall(message)]


def corpus() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*.yaml"))


def expected_field(path: Path) -> str:
    """The field a corpus file's first line (``# expect: <field path>``) says the error must name."""
    first = path.read_text().splitlines()[0]
    if not first.startswith("# expect: "):
        raise ValueError(f"{path.name}: the first line must be '# expect: <field path>'")
    return first.removeprefix("# expect: ").strip()


def corpus_manifest(path: Path) -> dict:
    """The file's manifest, renamed after the file so the whole corpus fits in one namespace.

    A file whose point is its name (``# expect: metadata.name``) keeps it.
    """
    doc = yaml.safe_load(path.read_text())
    if expected_field(path) != "metadata.name":
        doc["metadata"]["name"] = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower())[:40].strip("-")
    return doc


def apply_file(control_plane, namespace: str, path: Path, *, client_validation: bool = True) -> Outcome:
    """``kubectl apply`` one corpus file: refused by the schema, or stored (ask ``classify`` what followed).

    ``client_validation=False`` applies with ``--validate=false``, as clients that do not
    validate against the published schema (Helm, GitOps tools, API libraries) do: then only
    the API server and the operator stand between a bad manifest and a running experiment.
    """
    doc = corpus_manifest(path)
    flags = [] if client_validation else ["--validate=false"]
    result = kubectl(control_plane, "apply", "-n", namespace, *flags, "-f", "-", input=yaml.safe_dump(doc),
                     check=False)
    outcome = Outcome(path.stem, doc["metadata"]["name"], expected_field(path), STORED)
    if result.returncode != 0:
        outcome.verdict, outcome.message = REFUSED_BY_SCHEMA, result.stderr.strip()
    return outcome


def classify(api: client.ApiClient, namespace: str, outcome: Outcome, timeout: float = 60.0) -> Outcome:
    """For a stored manifest, wait for the operator's first verdict and record what a user sees.

    The operator's first step writes ``status.phase``: Failed with an operator reason, a
    Succeeded=False condition and a Warning Event is a refusal (the Event is posted right
    after, so it is waited for); Failed so without either is ``failed-without-notice``; any
    other phase means it was accepted.
    """
    if outcome.verdict != STORED:
        return outcome
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpoexperiments", outcome.name)
        status = obj.get("status") or {}
        if status.get("phase"):
            break
        time.sleep(0.2)
    outcome.reason = status.get("reason")
    outcome.message = status.get("message") or f"phase {status.get('phase') or '(none yet)'}, no message"
    outcome.condition = next((c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), None)
    refused = status.get("phase") == "Failed" and outcome.reason in OPERATOR_REASONS
    outcome.verdict = REFUSED_BY_OPERATOR if refused else NOT_REFUSED
    while refused and not outcome.events and time.monotonic() < deadline:
        outcome.events = warning_events(api, namespace, outcome.name)
        if not outcome.events:
            time.sleep(0.2)
    if refused and not (outcome.events and (outcome.condition or {}).get("status") == "False"):
        outcome.verdict = FAILED_WITHOUT_NOTICE
    outcome.trials, outcome.pods = children(api, namespace, outcome.name)
    return outcome


def warning_events(api: client.ApiClient, namespace: str, experiment: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=HPOExperiment,involvedObject.name={experiment}")
    return [e.message or "" for e in events.items if e.type == "Warning"]


def children(api: client.ApiClient, namespace: str, experiment: str) -> tuple[int, int]:
    """How many HPOTrial objects and pods exist for the experiment."""
    selector = f"{LABEL_EXPERIMENT}={experiment}"
    trials = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials",
                                                                        label_selector=selector)["items"]
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return len(trials), len(pods)
