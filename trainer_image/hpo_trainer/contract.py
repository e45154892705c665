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

ALL = (
    ENV_TRIAL_ID, ENV_EXPERIMENT, ENV_CONFIG, ENV_START_EPOCH, ENV_UNTIL_EPOCH,
    ENV_MAX_EPOCH, ENV_CHECKPOINT_DIR, ENV_METRICS_FILE, ENV_DATA_DIR,
)

# Key of the epoch in every metrics line; the other keys are metric values.
EPOCH_KEY = "epoch"
