"""The experiment argument the views share: a local run folder, or ``hpx/NAME`` on the cluster."""

from __future__ import annotations

import argparse

from hpo_operator.views.read import Target, parse_target


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="a local run folder (hpo-runs/<experiment>) or a cluster experiment "
                   "as hpx/NAME (kubectl hpo: NAME alone)")
    p.add_argument("-n", "--namespace", help="the cluster experiment's namespace (default: the kubeconfig context's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")


def target_of(args: argparse.Namespace) -> Target:
    return parse_target(args.experiment, namespace=args.namespace, kubeconfig=args.kubeconfig, context=args.context,
                        bare_name_is_cluster=getattr(args, "kubectl_plugin", False))
