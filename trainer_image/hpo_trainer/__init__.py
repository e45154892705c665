"""hpo_trainer: the trainer side of the hpo-operator contract (no Kubernetes dependency, torch optional).

    ctx = hpo_trainer.TrialContext.from_env()
    start = hpo_trainer.torch_state.restore(ctx, model=model, optimizer=opt)
    for epoch in ctx.epochs(start):
        ...train one epoch...
        hpo_trainer.torch_state.save(ctx, epoch, model=model, optimizer=opt)
        hpo_trainer.report(epoch, val_error=err)

See docs/trainer.md.
"""

from . import checkpoint, contract, torch_state, trace
from .context import TrialContext, TrialContextError, run_by_hand
from .metrics import (
    ErrorReason,
    MetricLineError,
    MetricRecord,
    MetricsReader,
    MetricsTail,
    MetricsWriter,
    parse_metric_line,
    report,
)

__all__ = [
    "ErrorReason", "MetricLineError", "MetricRecord", "MetricsReader", "MetricsTail", "MetricsWriter",
    "TrialContext", "TrialContextError", "checkpoint", "contract", "parse_metric_line", "report",
    "run_by_hand", "torch_state", "trace",
]

trace.mark("imported", process_start=trace.process_start_time() if trace.enabled() else None)
