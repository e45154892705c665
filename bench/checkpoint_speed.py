"""How fast the trainer SDK checkpoints, as a ratio to plain torch.save + fsync and torch.load.

Two training states, each a model with SGD-momentum state (one more copy of the weights):

- ``resnet18``: torchvision's ResNet-18 layout built with torch.nn (11.7M
  parameters, ~94 MB on disk);
- ``1gb``: eight 4096x4096 linear layers (134M parameters, ~1.07 GB on disk).

For each, in one process, repetitions rotate the order of the variants:

- save: ``hpo_trainer.torch_state.save`` (capture, checksummed frame, temp
  file, fsync, rename, fsync of the folder, keep the last two) against
  ``torch.save`` of the same state dicts into an open file + flush + fsync
  (the baseline), and against an "atomic" ``torch.save``: the SDK's file
  protocol without its frame (torch.save into a new temp file, fsync, rename,
  fsync of the folder, delete the file of two saves before). SDK / atomic is
  what the SDK's own code costs; atomic / plain what the protocol costs;
- load: ``torch_state.restore`` (find the newest checkpoint, verify its
  checksum, load with weights_only=True, load_state_dict) against
  ``torch.load`` (weights_only=True) + the same load_state_dict calls.

Both loads read a file just written, i.e. from the page cache: the case where
the checkpoint's own cost is most visible. "ratio" is the median over
repetitions of SDK time / plain time of the same repetition (likewise SDK /
atomic). "peak MB" is how
far the process's resident memory rose above where it stood before the call
(Linux: VmHWM after clearing it), i.e. the extra copies a call holds at once.

    .venv/bin/python bench/checkpoint_speed.py [--states resnet18,1gb] [--repeats 7] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from trainer_overhead import cpu_model

from hpo_trainer import checkpoint, torch_state
from hpo_trainer.context import TrialContext

TARGET_RATIO = 1.5


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (ImageNet stem, 1000 classes): 11,689,512 parameters."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def resnet18_state() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ResNet18()
    return model, _with_momentum(model, torch.randn(2, 3, 64, 64))


def one_gb_state() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(4096, 4096, bias=False) for _ in range(8)))
    return model, _with_momentum(model, torch.randn(2, 4096))


def _with_momentum(model: nn.Module, batch: torch.Tensor) -> torch.optim.Optimizer:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model(batch).square().mean().backward()
    optimizer.step()  # the momentum buffers now exist
    optimizer.zero_grad(set_to_none=True)
    return optimizer


STATES: dict[str, Callable[[], tuple[nn.Module, torch.optim.Optimizer]]] = {
    "resnet18": resnet18_state,
    "1gb": one_gb_state,
}


# --- peak memory of one call ---------------------------------------------------

def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def measured(fn: Callable[[], object]) -> tuple[float, float | None]:
    """(seconds, MB the resident set rose above its level at the start) of one call."""
    can_peak = _reset_peak()
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") if can_peak else None
    rise = (peak - before) / 1e3 if peak is not None and before is not None else None
    return seconds, rise


# --- the four variants ----------------------------------------------------------

@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)

    def add(self, seconds: float, peak: float | None) -> None:
        self.seconds.append(seconds)
        if peak is not None:
            self.peaks.append(peak)


class Variants:
    """Plain torch and SDK save/load of one model + optimizer in one folder."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path):
        self.model, self.optimizer = model, optimizer
        self.sdk_dir = folder / "sdk"
        self.plain_file = folder / "plain.pt"
        self.atomic_dir = folder / "atomic"
        self.atomic_dir.mkdir(parents=True, exist_ok=True)
        self.epoch = self.atomic_epoch = 0

    def _ctx(self, start_epoch: int) -> TrialContext:
        return TrialContext.for_local(self.sdk_dir, until_epoch=start_epoch + 1, start_epoch=start_epoch)

    def sdk_save(self) -> None:
        self.epoch += 1
        torch_state.save(self._ctx(0), self.epoch, model=self.model, optimizer=self.optimizer)

    def sdk_load(self) -> None:
        restored = torch_state.restore(self._ctx(self.epoch), model=self.model, optimizer=self.optimizer)
        assert restored == self.epoch, (restored, self.epoch)

    def plain_save(self) -> None:
        with open(self.plain_file, "wb") as f:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())

    def atomic_save(self) -> None:
        self.atomic_epoch += 1
        final = self.atomic_dir / f"{self.atomic_epoch}.pt"
        temp = self.atomic_dir / f".{self.atomic_epoch}.pt.tmp"
        with open(temp, "wb") as f:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        folder = os.open(self.atomic_dir, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        (self.atomic_dir / f"{self.atomic_epoch - 2}.pt").unlink(missing_ok=True)

    def plain_load(self) -> None:
        state = torch.load(self.plain_file, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def sdk_file(self) -> Path:
        return checkpoint.checkpoint_path(self._ctx(0).checkpoint_dir, self.epoch)


@dataclass
class Row:
    state: str
    op: str
    mb: float
    plain_s: float
    sdk_s: float
    ratio: float
    plain_peak: float | None
    sdk_peak: float | None
    atomic_s: float | None = None
    atomic_ratio: float | None = None


def bench_state(name: str, repeats: int, scratch: Path) -> tuple[int, list[Row]]:
    model, optimizer = STATES[name]()
    params = sum(p.numel() for p in model.parameters())
    v = Variants(model, optimizer, scratch / name)
    ops = {"save": {"plain": v.plain_save, "sdk": v.sdk_save, "atomic": v.atomic_save},
           "load": {"plain": v.plain_load, "sdk": v.sdk_load}}
    for variants in ops.values():  # warm-up: allocator, page cache, lazy imports
        for fn in variants.values():
            fn()
    times = {(op, which): Timings() for op, variants in ops.items() for which in variants}
    ratios: dict[tuple[str, str], list[float]] = {(op, base): [] for op, variants in ops.items()
                                                  for base in variants if base != "sdk"}
    for rep in range(repeats):
        for op, variants in ops.items():
            order = list(variants.items())
            order = order[rep % len(order):] + order[:rep % len(order)]  # each variant leads in turn
            took = {}
            for which, fn in order:
                seconds, peak = measured(fn)
                times[op, which].add(seconds, peak)
                took[which] = seconds
            for base in variants:
                if base != "sdk":
                    ratios[op, base].append(took["sdk"] / took[base])
    mb = v.sdk_file().stat().st_size / 1e6
    rows = []
    for op, variants in ops.items():
        plain_t, sdk_t = times[op, "plain"], times[op, "sdk"]
        atomic_t = times.get((op, "atomic"))
        rows.append(Row(
            state=name, op=op, mb=mb,
            plain_s=statistics.median(plain_t.seconds), sdk_s=statistics.median(sdk_t.seconds),
            ratio=statistics.median(ratios[op, "plain"]),
            plain_peak=statistics.median(plain_t.peaks) if plain_t.peaks else None,
            sdk_peak=statistics.median(sdk_t.peaks) if sdk_t.peaks else None,
            atomic_s=statistics.median(atomic_t.seconds) if atomic_t else None,
            atomic_ratio=statistics.median(ratios[op, "atomic"]) if atomic_t else None,
        ))
    del model, optimizer, v
    shutil.rmtree(scratch / name)
    return params, rows


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _mb(value: float | None) -> str:
    return f"{max(value, 0.0):,.0f}" if value is not None else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--states", default=",".join(STATES),
                        help=f"comma-separated, from {', '.join(STATES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions of each variant (medians are printed)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for the files (default: a temp folder; put it on the volume you care about)")
    args = parser.parse_args()
    states = [s for s in args.states.split(",") if s]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        parser.error(f"--states: unknown {', '.join(unknown)}; choose from {', '.join(STATES)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.scratch is not None:
        args.scratch.mkdir(parents=True, exist_ok=True)

    print(f"CPU: {machine()}")
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-bench-", dir=args.scratch) as tmp:
        print(f"folder {tmp}; {args.repeats} repetitions, each variant leading in turn; medians\n")
        print(f"{'state':<10}{'params':>8}{'op':>6}{'MB':>8}{'plain s':>9}{'SDK s':>8}{'ratio':>7}"
              f"{'atomic s':>10}{'SDK/atomic':>11}{'plain peak MB':>15}{'SDK peak MB':>13}")
        verdicts = []
        for name in states:
            params, rows = bench_state(name, args.repeats, Path(tmp))
            for r in rows:
                atomic = (f"{r.atomic_s:>10.3f}{r.atomic_ratio:>10.2f}x" if r.atomic_s is not None
                          else f"{'-':>10}{'-':>11}")
                print(f"{r.state:<10}{params / 1e6:>7.1f}M{r.op:>6}{r.mb:>8,.0f}{r.plain_s:>9.3f}{r.sdk_s:>8.3f}"
                      f"{r.ratio:>6.2f}x{atomic}{_mb(r.plain_peak):>15}{_mb(r.sdk_peak):>13}")
                verdicts.append(r.ratio <= TARGET_RATIO)
    print("\nplain save: torch.save into an open file + flush + fsync; SDK save: torch_state.save")
    print("atomic save: torch.save into a new temp file + fsync, rename, fsync of the folder, keep the last two")
    print("plain load: torch.load(weights_only=True) + load_state_dict; SDK load: torch_state.restore")
    print("ratio: median over repetitions of SDK time / plain time of the same repetition (SDK/atomic likewise)")
    print("peak MB: how far resident memory rose above its level before the call (memory the process had")
    print("         freed and takes again does not count)")
    met = "met" if all(verdicts) else "NOT met"
    print(f"target: SDK / plain <= {TARGET_RATIO}x everywhere: {met}")


if __name__ == "__main__":
    main()
