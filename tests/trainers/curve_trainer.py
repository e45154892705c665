"""Test trainer without torch: replays one row of a learning-curve table through the real contract.

It reads the env contract, restores its epoch counter from the newest
checkpoint, and for each epoch sleeps, checkpoints, then reports the table's
value, exactly as a real trainer would; runner and operator tests use it to
get known metrics at a known pace.

Config (HPO_CONFIG):
    table             path of a table JSON (bench/tables/*.json format)       required
    row               row index into the table's "curves"                     required
    seconds_per_epoch sleep per epoch                                         default 0
    crash_at_epoch    exit 3 when about to train this epoch, on the first     default none
                      attempt only (marker file in the checkpoint folder)
    garbage           before each epoch's line, also write a progress-bar    default false
                      line (not JSON) and a line without the objective
Reports the table's metric (its "metric" key, e.g. val_error) for each epoch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import hpo_trainer
from hpo_trainer import checkpoint

CRASH_EXIT_CODE = 3


def crash_marker(ctx: hpo_trainer.TrialContext, epoch: int) -> Path:
    return ctx.checkpoint_dir / f"crashed-at-epoch-{epoch}"


def main() -> int:
    ctx = hpo_trainer.TrialContext.from_env()
    try:
        table_path, row = Path(ctx.config["table"]), int(ctx.config["row"])
    except KeyError as missing:
        print(f"curve_trainer: config needs {missing} (see the module docstring)", file=sys.stderr)
        return 2
    table = json.loads(table_path.read_text())
    curve, metric = table["curves"][row], table.get("metric", "val_error")
    if ctx.until_epoch > len(curve):
        print(f"curve_trainer: row {row} has {len(curve)} epochs, asked for {ctx.until_epoch}", file=sys.stderr)
        return 2
    seconds = float(ctx.config.get("seconds_per_epoch", 0.0))
    crash_at = ctx.config.get("crash_at_epoch")

    found = checkpoint.latest(ctx.checkpoint_dir, max_epoch=ctx.start_epoch) if ctx.start_epoch else None
    if found is not None and found.payload.get("row") != row:
        print(f"curve_trainer: checkpoint {found.path} is of row {found.payload.get('row')}, not {row}", file=sys.stderr)
        return 2
    start = found.epoch if found is not None else 0

    for epoch in ctx.epochs(start):
        if epoch == crash_at and not crash_marker(ctx, epoch).exists():
            ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            crash_marker(ctx, epoch).touch()
            print(f"curve_trainer: crashing at epoch {epoch} as configured", file=sys.stderr)
            return CRASH_EXIT_CODE
        time.sleep(seconds)
        checkpoint.save(ctx.checkpoint_dir, epoch, {"epoch": epoch, "row": row}, serializer="pickle")
        if ctx.config.get("garbage"):
            with open(ctx.metrics_file, "a") as f:
                f.write(f"Epoch {epoch}/{ctx.until_epoch} - loss: 0.41\n")
                f.write(json.dumps({"epoch": epoch, "loss": 0.41}) + "\n")
        hpo_trainer.report(epoch, **{metric: curve[epoch - 1]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
