"""kopf handlers: a table of contents. The work is in ``reconcile`` (pure) and ``kube`` (API calls).

    kopf run --standalone --all-namespaces -m hpo_operator.controller.handlers
"""

from __future__ import annotations

import os

import kopf

from hpo_operator.controller import kube
from hpo_operator.controller.conditions import set_condition
from hpo_operator.controller.reconcile import reconcile
from hpo_operator.spec import ManifestError, experiment_spec_from_dict

GROUP, VERSION, PLURAL = "hpo.dev", "v1alpha1", "hpoexperiments"
INTERVAL = float(os.environ.get("HPO_RECONCILE_INTERVAL", "2"))
FINISHED = ("Succeeded", "Failed")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Status has a schema: keep kopf's own bookkeeping in annotations under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hpo.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="hpo.dev")
    settings.persistence.finalizer = "hpo.dev/finalizer"
    settings.posting.level = int(os.environ.get("HPO_EVENT_LEVEL", "20"))
    settings.watching.server_timeout = int(os.environ.get("HPO_WATCH_TIMEOUT", "300"))


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, idle=None,
            when=lambda status, **_: (status or {}).get("phase") not in FINISHED)
def run_experiment(body, spec, status, name, namespace, meta, patch, logger, **_):
    """Validate, then one reconcile step: decisions, runs ended, slots filled, status written."""
    try:
        parsed = experiment_spec_from_dict(dict(spec))
    except ManifestError as err:
        return refuse(body, status, meta, patch, logger, "InvalidSpec", "; ".join(err.problems))
    api = kube.Api.from_environment()
    api.ensure_sidecar_identity(namespace)
    # Pods first: a pod seen finished had its observations written before it ended.
    pods = api.list_pods(namespace, name)
    trials = api.list_trials(namespace, name)
    plan = reconcile(name, parsed, dict(status or {}), trials, pods, kube.now())
    try:
        kube.execute(api, plan, parsed, dict(body), trials, logger)
    except kube.TemplateRejected as err:
        return refuse(body, status, meta, patch, logger, "InvalidTrialTemplate", str(err))
    st = plan.experiment_status
    st["observedGeneration"] = meta.get("generation")
    cond_status = {"Succeeded": "True", "Failed": "False"}.get(st["phase"], "Unknown")
    st["conditions"] = set_condition(status, "Succeeded", cond_status, st.get("reason") or "Running",
                                     st.get("message") or "trials are running", meta.get("generation"))
    patch.status.update(st)
    if st["phase"] in FINISHED:
        event = kopf.info if st["phase"] == "Succeeded" else kopf.warn
        event(body, reason=st["phase"], message=st.get("message") or "")
        logger.info(f"Finished experiment name={name} phase={st['phase']} reason={st.get('reason')}")


def refuse(body, status, meta, patch, logger, reason: str, message: str) -> None:
    """Fail the experiment for a problem only the user can fix; trials already recorded stay as they are."""
    kopf.warn(body, reason=reason, message=message)
    patch.status.update(phase="Failed", reason=reason, message=message,
                        conditions=set_condition(status, "Succeeded", "False", reason, message,
                                                 meta.get("generation")))
    logger.error(f"Refused experiment name={body['metadata']['name']}: {message}")
