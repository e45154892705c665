"""The environment contract between a runner (operator pod, local process) and a trainer.

Every name lives here so the operator, the local runner and the SDK agree.
A trainer never needs Kubernetes: it reads these variables, trains from
``HPO_START_EPOCH + 1`` up to and including ``HPO_UNTIL_EPOCH``, appends one
JSON line per epoch to ``HPO_METRICS_FILE``, saves a checkpoint into
``HPO_CHECKPOINT_DIR`` and exits 0.
"""

ENV_TRIAL_ID = "HPO_TRIAL_ID"            # trial name, e.g. "digits-asha-0007"
ENV_EXPERIMENT = "HPO_EXPERIMENT"        # experiment name
ENV_CONFIG = "HPO_CONFIG"                # JSON object: the sampled hyperparameters
ENV_START_EPOCH = "HPO_START_EPOCH"      # last epoch already trained and checkpointed (0 = fresh)
ENV_UNTIL_EPOCH = "HPO_UNTIL_EPOCH"      # train up to and including this epoch, checkpoint, exit 0
ENV_MAX_EPOCH = "HPO_MAX_EPOCH"          # the experiment's max resource (for LR schedules)
ENV_CHECKPOINT_DIR = "HPO_CHECKPOINT_DIR"  # folder that survives pauses (a PVC on Kubernetes)
ENV_METRICS_FILE = "HPO_METRICS_FILE"    # JSON-lines file; one object per epoch
ENV_DATA_DIR = "HPO_DATA_DIR"            # optional folder with data sets (mounted read-only)
ENV_CONTROL_FILE = "HPO_CONTROL_FILE"    # JSON written by the runner: decisions at rung epochs (see below)
ENV_DECISION_TIMEOUT = "HPO_DECISION_TIMEOUT"  # seconds a trainer waits at HPO_UNTIL_EPOCH for a decision
# Set by whoever measures, not by the runner: "1" makes the SDK log start-up timestamps (see trace.py).
ENV_TRACE = "HPO_TRACE"

# Promote in place. When a trainer reaches HPO_UNTIL_EPOCH it has reported that
# epoch and checkpointed it; before exiting it waits (up to
# HPO_DECISION_TIMEOUT seconds, default 30) for the runner to write the control
# file with ``decided_epoch >= until``. If the file then says ``until`` is
# larger, the trainer keeps going in the same process (no pod restart);
# otherwise, or on timeout, it exits 0 and the trial is paused. The file is
# replaced atomically (temp + rename):  {"decided_epoch": 9, "until": 27}
CONTROL_DECIDED_EPOCH = "decided_epoch"
CONTROL_UNTIL = "until"
DEFAULT_DECISION_TIMEOUT = 30.0

ALL = (
    ENV_TRIAL_ID, ENV_EXPERIMENT, ENV_CONFIG, ENV_START_EPOCH, ENV_UNTIL_EPOCH,
    ENV_MAX_EPOCH, ENV_CHECKPOINT_DIR, ENV_METRICS_FILE, ENV_DATA_DIR, ENV_CONTROL_FILE, ENV_DECISION_TIMEOUT,
)

# Key of the epoch in every metrics line; the other keys are metric values.
EPOCH_KEY = "epoch"
