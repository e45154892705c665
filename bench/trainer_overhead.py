"""What the trainer SDK costs a training loop.

Training throughput of the digits MLP example (its data, model and loop,
   imported from trainer_image/examples/digits_mlp.py) with the SDK
   (``torch_state.save`` + ``hpo_trainer.report`` every epoch, both fsynced)
   against the identical loop without them, in one process, the two variants
   interleaved (their order alternates every repetition); medians are
   printed. Two settings:

   - ``example``: the example's default config (64 units x 2 layers, ~5k
     parameters, one pass over 1,437 images an epoch). Its epoch is tens of
     milliseconds, so the per-epoch checkpoint is a visible share of it; this
     is the worst case, not a typical one.
   - ``wide``: the same loop with 512 units x 3 layers (~560k parameters) and
     an epoch of 10 passes over the training set: an epoch of about a second
     on 2 CPU cores, still far below the minutes of a real epoch, so the
     figure is an upper bound for real trainers.

   "overhead" is the median over repetitions of (SDK run time / plain run
   time of the same repetition) - 1, "noise" the spread of the plain runs
   (max - min over median), the A/B's resolution. "in SDK calls"
   is the time spent inside save + report as a share of the plain epoch time,
   measured directly in the SDK runs (less noisy than the A/B difference).

Checkpoint save and load speed against plain torch is bench/checkpoint_speed.py
(which builds its ResNet-18 from this module).

    .venv/bin/python bench/trainer_overhead.py [--device cuda|cpu] [--repeats 5] [--epochs 5]

Runs on CUDA when available, else CPU, and says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import hpo_trainer
from hpo_trainer import torch_state
from hpo_trainer.context import TrialContext, run_by_hand

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "trainer_image" / "examples" / "digits_mlp.py"
TARGET_OVERHEAD = 0.02


def load_example():
    spec = importlib.util.spec_from_file_location("digits_mlp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    """The processor's name as /proc/cpuinfo gives it (platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. training loop with and without the SDK ----------------------------------

SETTINGS = {
    # name: (config overrides on the example's DEFAULTS, passes over the training set per epoch)
    "example": ({}, 1),
    "wide": ({"n_units": 512, "n_layers": 3}, 10),
}


def train_run(example, setting: str, device: torch.device, epochs: int, workdir: Path | None) -> dict:
    """Train `epochs` epochs as digits_mlp.main does; with `workdir`, save + report each epoch.

    Returns wall time of the epoch loop, time inside the SDK calls, samples trained.
    """
    overrides, passes = SETTINGS[setting]
    config = example.read_config(overrides)
    torch_state.seed_everything(int(config["seed"]))
    amp = bool(config["amp"])
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    train_set, x_val, y_val = example.load_data(device)
    shuffle = torch.Generator().manual_seed(int(config["seed"]))
    loader = DataLoader(train_set, batch_size=int(config["batch_size"]), shuffle=True, generator=shuffle)
    model = example.build_model(config).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["learning_rate"], momentum=config["momentum"],
        weight_decay=config["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    state = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, generators=[shuffle])

    sdk_seconds = 0.0

    def loop() -> None:
        nonlocal sdk_seconds
        for epoch in range(1, epochs + 1):
            model.train()
            total, count = 0.0, 0
            for _ in range(passes):
                for xb, yb in loader:
                    xb, yb = xb.to(device), yb.to(device)
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                        loss = loss_fn(model(xb), yb)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total += loss.item() * len(yb)
                    count += len(yb)
            scheduler.step()
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                logits = model(x_val).float()
            val_loss = loss_fn(logits, y_val).item()
            val_error = int((logits.argmax(dim=1) != y_val).sum()) / len(y_val)
            if not math.isfinite(val_loss):
                val_error = 1.0
            if workdir is not None:
                sync(device)
                t = time.perf_counter()
                torch_state.save(ctx, epoch, **state)
                hpo_trainer.report(epoch, val_error=val_error, val_loss=val_loss, train_loss=total / count)
                sdk_seconds += time.perf_counter() - t

    ctx = None
    sync(device)
    start = time.perf_counter()
    if workdir is None:
        loop()
    else:
        ctx = TrialContext.for_local(workdir, until_epoch=epochs, start_epoch=0)
        run_by_hand(loop, ctx)
    sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "sdk_seconds": sdk_seconds, "samples": epochs * passes * len(train_set)}


def bench_loop(example, setting: str, device: torch.device, epochs: int, repeats: int, scratch: Path) -> dict:
    train_run(example, setting, device, 1, None)  # warm-up: allocator, kernels, data
    plain, sdk = [], []
    for rep in range(repeats):
        order = ("plain", "sdk") if rep % 2 == 0 else ("sdk", "plain")
        for variant in order:
            if variant == "plain":
                plain.append(train_run(example, setting, device, epochs, None))
            else:
                workdir = scratch / f"loop-{setting}-{rep}"
                sdk.append(train_run(example, setting, device, epochs, workdir))
                shutil.rmtree(workdir)
    plain_sps = statistics.median(r["samples"] / r["seconds"] for r in plain)
    sdk_sps = statistics.median(r["samples"] / r["seconds"] for r in sdk)
    plain_epoch = statistics.median(r["seconds"] for r in plain) / epochs
    sdk_call = statistics.median(r["sdk_seconds"] for r in sdk) / epochs
    # Runs of one repetition are adjacent in time, so their ratio cancels most of the drift of a shared machine.
    paired = statistics.median(s["seconds"] / p["seconds"] for p, s in zip(plain, sdk)) - 1.0
    plain_times = [r["seconds"] for r in plain]
    return {
        "setting": setting,
        "epoch_samples": plain[0]["samples"] // epochs,
        "plain_sps": plain_sps,
        "sdk_sps": sdk_sps,
        "plain_epoch_ms": plain_epoch * 1e3,
        "sdk_call_ms": sdk_call * 1e3,
        "overhead": paired,
        "spread": (max(plain_times) - min(plain_times)) / statistics.median(plain_times),
        "in_calls": sdk_call / plain_epoch,
    }


# --- main ----------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each variant (medians are printed)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per training run")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for checkpoints (default: a temp folder; put it on the volume you care about)")
    args = parser.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")

    print(f"device: {device_description(device)}; torch {torch.__version__}")
    print(f"{args.repeats} interleaved repetitions of each variant, {args.epochs} epochs a run, medians\n")
    example = load_example()
    scratch_parent = args.scratch
    if scratch_parent is not None:
        scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpo-trainer-bench-", dir=scratch_parent) as tmp:
        scratch = Path(tmp)
        print("digits MLP training loop, without vs with the SDK (save + report every epoch)")
        print(f"{'setting':<9}{'samples/epoch':>14}{'epoch ms':>10}{'plain samples/s':>17}"
              f"{'SDK samples/s':>15}{'overhead':>10}{'noise':>8}{'SDK ms/epoch':>14}{'in SDK calls':>14}")
        loops = []
        for setting in SETTINGS:
            r = bench_loop(example, setting, device, args.epochs, args.repeats, scratch)
            loops.append(r)
            print(f"{r['setting']:<9}{r['epoch_samples']:>14,}{r['plain_epoch_ms']:>10.1f}{r['plain_sps']:>17,.0f}"
                  f"{r['sdk_sps']:>15,.0f}{r['overhead']:>+10.1%}{r['spread']:>8.0%}{r['sdk_call_ms']:>14.2f}{r['in_calls']:>14.1%}")
        print("example: the example's default config (64x2 units), 1 pass over the data per epoch (worst case)")
        print("wide:    512x3 units, 10 passes per epoch (epoch ~ seconds; closer to a real trainer)")
        print("overhead: median over repetitions of SDK run time / plain run time - 1 (A/B; cannot resolve")
        print("          differences below the noise: max-min spread of the plain runs over their median);")
        print("in SDK calls: time inside torch_state.save + report / plain epoch time (measured directly)")
        wide = loops[-1]
        verdict = "met" if wide["in_calls"] < TARGET_OVERHEAD else "NOT met"
        print(f"target: SDK overhead < {TARGET_OVERHEAD:.0%} (wide setting, time in SDK calls): "
              f"{wide['in_calls']:.1%} ({verdict})\n")

if __name__ == "__main__":
    main()
