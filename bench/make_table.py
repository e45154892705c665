"""Make a learning-curve table by really training models (format: bench/tables/README.md).

Draws ``--configs`` configurations from a stated search space with ``--seed``,
trains each for ``--epochs`` epochs on one CPU thread, and writes every
epoch's validation error and CPU seconds. The table records the search space
and the command's own arguments, so the same command makes the same table.
Prints the Spearman rank correlation of epoch-1 with final validation errors,
the figure that says whether early epochs can be trusted on this table.

    nice -n 15 .venv/bin/python bench/make_table.py --dataset digits --model mlp --space mlp-schedule \
        --configs 300 --epochs 27 --seed 1 --out bench/tables/digits_sched_s1.json

Rows finished so far are kept in ``<out>.partial.jsonl``; a rerun with the same
arguments resumes from there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from tablegen.data import DATASETS, load
from tablegen.space import SPACES, draw_configs
from tablegen.train import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--model", required=True, choices=["mlp", "cnn"], help="model family")
    p.add_argument("--space", choices=sorted(SPACES), help="search space (default: the model family's plain one)")
    p.add_argument("--configs", type=int, required=True, help="configurations (rows) to draw and train")
    p.add_argument("--epochs", type=int, default=27, help="epochs per configuration (default 27)")
    p.add_argument("--seed", type=int, required=True, help="seeds the draws, the data split and every training")
    p.add_argument("--train-size", type=int, default=1200, help="training examples (subsampled)")
    p.add_argument("--val-size", type=int, default=500, help="validation examples (subsampled)")
    p.add_argument("--image-side", type=int, default=28, help="Fashion-MNIST images average-pooled to this side")
    p.add_argument("--name", help="table name (default: the output file's stem)")
    p.add_argument("--out", required=True, type=Path, help="table to write (JSON)")
    args = p.parse_args(argv)
    args.space = args.space or args.model
    if not args.space.startswith(args.model):
        p.error(f"--space {args.space} is not a space of model family {args.model}")
    if args.configs < 1 or args.epochs < 1:
        p.error("--configs and --epochs must be at least 1")
    return args


def row_seed(seed: int, row: int) -> int:
    return int(np.random.SeedSequence([seed, row]).generate_state(1)[0])


def epoch1_rank_correlation(curves: np.ndarray) -> float:
    """Spearman correlation of epoch-1 and final errors over the rows (nan when either is constant)."""
    if len(curves) < 3:
        return float("nan")
    return float(spearmanr(curves[:, 0], curves[:, -1]).statistic)


def _recorded_arguments(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}


def _resume(partial: Path, arguments: dict) -> dict[int, tuple[list[float], list[float]]]:
    if not partial.exists():
        return {}
    lines = partial.read_text().splitlines()
    if not lines or json.loads(lines[0]).get("arguments") != arguments:
        raise SystemExit(f"{partial}: made with other arguments; delete it to start again")
    done = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a row cut short by a kill
            continue
        done[rec["row"]] = (rec["curve"], rec["seconds"])
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    arguments = _recorded_arguments(args)
    space = SPACES[args.space]
    configs = draw_configs(space, args.configs, args.seed)
    split = load(args.dataset, seed=args.seed, train_size=args.train_size, val_size=args.val_size,
                 image_side=args.image_side)
    partial = args.out.with_name(args.out.name + ".partial.jsonl")
    done = _resume(partial, arguments)
    if not done:
        partial.write_text(json.dumps({"arguments": arguments}) + "\n")
    started = time.monotonic()
    with partial.open("a") as log:
        for row, config in enumerate(configs):
            if row in done:
                continue
            curve, seconds = train(config, args.model, split, args.epochs, row_seed(args.seed, row))
            done[row] = (curve, seconds)
            log.write(json.dumps({"row": row, "curve": curve, "seconds": seconds}) + "\n")
            log.flush()
            if (row + 1) % 10 == 0 or row + 1 == len(configs):
                print(f"{row + 1}/{len(configs)} rows, {time.monotonic() - started:.0f}s", flush=True)
    curves = np.array([done[r][0] for r in range(len(configs))])
    rho = epoch1_rank_correlation(curves)
    table = {
        "name": args.name or args.out.stem,
        "metric": "val_error",
        "mode": "min",
        "resource": "epoch",
        "max_resource": args.epochs,
        "search_space": space,
        "generator": {
            "command": "bench/make_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "arguments": arguments,
            "torch": torch.__version__,
            "train_examples": len(split.x_train),
            "val_examples": len(split.x_val),
            "epoch_seconds": "CPU seconds of one thread (training + validation)",
        },
        "epoch1_final_spearman": None if np.isnan(rho) else round(rho, 4),
        "configs": configs,
        "curves": [done[r][0] for r in range(len(configs))],
        "epoch_seconds": [[round(s, 6) for s in done[r][1]] for r in range(len(configs))],
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    os.replace(tmp, args.out)
    partial.unlink()
    finals = curves[:, -1]
    print(f"{table['name']}: {len(configs)} configurations x {args.epochs} epochs; final val_error "
          f"best {finals.min():.4f} median {np.median(finals):.4f}; epoch-1 vs final Spearman {rho:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
