"""Read one experiment for the views: a local run folder, or ``hpx/NAME`` from a cluster through the kubeconfig.

On a cluster only what ``kubectl get`` reads is used: the HPOExperiment, its
HPOTrials (by their ``hpo.dev/experiment`` label) and, for ``hpo status``,
the namespace's Events. A user needs get/list on those and nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hpo_operator.controller.builders import LABEL_EXPERIMENT
from hpo_operator.local.results import RESULTS_FILE, read_results
from hpo_operator.resources import EXPERIMENT_PLURAL, EXPERIMENT_SHORT, EXPERIMENT_SINGULAR, GROUP, TRIAL_PLURAL, VERSION
from hpo_operator.views.model import ExperimentSnapshot
from hpo_operator.views.snapshots import from_cluster, from_results

# What a user may type for the kind, as kubectl accepts it.
KIND_NAMES = (EXPERIMENT_SHORT, EXPERIMENT_SINGULAR, EXPERIMENT_PLURAL, f"{EXPERIMENT_PLURAL}.{GROUP}",
              f"{EXPERIMENT_SINGULAR}.{GROUP}")


@dataclass(frozen=True)
class Target:
    """What a view shows: a local run folder, or an experiment on the cluster."""

    run_dir: Optional[Path] = None
    name: Optional[str] = None  # on the cluster
    namespace: Optional[str] = None  # None: the kubeconfig context's namespace, else "default"
    kubeconfig: Optional[str] = None
    context: Optional[str] = None

    @property
    def on_cluster(self) -> bool:
        return self.name is not None


def parse_target(text: str, *, namespace: Optional[str] = None, kubeconfig: Optional[str] = None,
                 context: Optional[str] = None, bare_name_is_cluster: bool = False) -> Target:
    """``hpx/NAME`` (or ``hpoexperiment/NAME``) is a cluster experiment; anything else a local run folder
    (or its results.json). ``bare_name_is_cluster``: as a kubectl plugin, ``NAME`` alone is on the cluster."""
    kind, slash, name = text.partition("/")
    if slash and kind.lower() in KIND_NAMES:
        if not name:
            raise ValueError(f"{text}: no experiment name after the slash; write {kind}/NAME")
        return Target(name=name, namespace=namespace, kubeconfig=kubeconfig, context=context)
    path = Path(text)
    if path.name == RESULTS_FILE:
        path = path.parent
    if bare_name_is_cluster and not slash and not path.exists():
        return Target(name=text, namespace=namespace, kubeconfig=kubeconfig, context=context)
    if not path.is_dir():
        raise ValueError(f"{text}: no such run folder; give a local run (hpo-runs/<experiment>) or a cluster "
                         f"experiment as hpx/NAME (with -n NAMESPACE)")
    return Target(run_dir=path)


def reader(target: Target) -> "LocalReader | ClusterReader":
    """Something whose ``snapshot()`` reads the target again (``--watch`` calls it repeatedly)."""
    return ClusterReader(target) if target.on_cluster else LocalReader(target.run_dir)


def read(target: Target, *, with_events: bool = False) -> ExperimentSnapshot:
    source = reader(target)
    try:
        return source.snapshot(with_events=with_events)
    finally:
        source.close()


class LocalReader:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def snapshot(self, with_events: bool = False) -> ExperimentSnapshot:
        return from_results(read_results(self.run_dir), f"local run {self.run_dir}")

    def close(self) -> None:
        pass


class ClusterReader:
    """Reads one experiment through the kubeconfig; keeps its API client for ``--watch``."""

    def __init__(self, target: Target):
        from kubernetes import client, config

        try:
            self.api = config.new_client_from_config(config_file=target.kubeconfig, context=target.context)
        except config.ConfigException as err:
            where = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ValueError(f"cannot use the kubeconfig {where}: {err}; pass --kubeconfig or set KUBECONFIG") from None
        self.name = target.name
        self.namespace = target.namespace or _context_namespace(target.kubeconfig, target.context)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def snapshot(self, with_events: bool = False) -> ExperimentSnapshot:
        from kubernetes.client.exceptions import ApiException

        try:
            experiment = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, EXPERIMENT_PLURAL,
                                                                  self.name)
            trials = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, TRIAL_PLURAL, label_selector=f"{LABEL_EXPERIMENT}={self.name}")["items"]
            events = None
            if with_events:
                answer = self.core.list_namespaced_event(self.namespace, field_selector="type=Warning",
                                                         _preload_content=False)
                events = json.loads(answer.data)["items"]
        except ApiException as err:
            raise ValueError(self._explain(err)) from None
        return from_cluster(experiment, trials, events)

    def _explain(self, err) -> str:
        at = f"hpx/{self.name} in namespace {self.namespace}"
        if err.status == 404:
            return (f"{at}: not found; list the experiments with `kubectl get hpx -n {self.namespace}` "
                    f"(or pick another namespace with -n)")
        if err.status in (401, 403):
            return (f"{at}: the API server refused to show it ({err.status} {err.reason}); your user needs get and "
                    f"list on {EXPERIMENT_PLURAL} and {TRIAL_PLURAL} ({GROUP}), and list on events for hpo status")
        return f"{at}: the API server answered {err.status} {err.reason}"

    def close(self) -> None:
        self.api.close()


def _context_namespace(kubeconfig: Optional[str], context: Optional[str]) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"
