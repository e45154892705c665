"""torch_state: every piece of training state survives a save/restore, and pausing changes nothing.

The last test is the contract's promise end to end: epochs 1..9, process exit,
epochs 10..27 in a new process give the same bits as 1..27 straight through.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch

from hpo_trainer import TrialContext, checkpoint, torch_state  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "trainer_image" / "examples" / "digits_mlp.py"


def make_run(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    gen = torch.Generator().manual_seed(seed)
    return model, opt, sched, gen


def step(model, opt, sched, gen):
    x = torch.randn(16, 4, generator=gen)
    loss = model(x).pow(2).mean() + random.random() + float(np.random.rand())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def draws(gen):
    return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=gen)))


def ctx_for(tmp_path, start):
    return TrialContext(config={}, start_epoch=start, until_epoch=start + 1, checkpoint_dir=tmp_path,
                        metrics_file=tmp_path / "m.jsonl")


def test_restore_brings_back_weights_optimizer_scheduler_and_every_generator(tmp_path):
    model, opt, sched, gen = make_run()
    for _ in range(3):
        step(model, opt, sched, gen)
    torch_state.save(ctx_for(tmp_path, 0), 3, model=model, optimizer=opt, scheduler=sched, generators=[gen],
                     extra={"best": 0.25})
    expected_draws = draws(gen)
    step(model, opt, sched, gen)

    other, opt2, sched2, gen2 = make_run(seed=123)  # a fresh process would start from other states
    extra = {}
    start = torch_state.restore(ctx_for(tmp_path, 3), model=other, optimizer=opt2, scheduler=sched2,
                                generators=[gen2], extra=extra)
    assert start == 3 and extra == {"best": 0.25}
    assert sched2.last_epoch == 3
    assert draws(gen2) == expected_draws  # python, numpy, torch CPU and the trainer's generator
    step(other, opt2, sched2, gen2)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for mine, theirs in zip(other.parameters(), model.parameters()):
        assert torch.equal(mine, theirs)


def test_fresh_start_loads_nothing(tmp_path):
    model, opt, sched, gen = make_run()
    torch_state.save(ctx_for(tmp_path, 0), 1, model=model)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch_state.restore(ctx_for(tmp_path, 0), model=model) == 0
    assert not torch.equal(next(model.parameters()), before[0])


def test_damaged_checkpoint_of_start_epoch_falls_back(tmp_path, capsys):
    model, *_ = make_run()
    torch_state.save(ctx_for(tmp_path, 0), 1, model=model)
    newest = torch_state.save(ctx_for(tmp_path, 0), 2, model=model)
    newest.write_bytes(newest.read_bytes()[:100])
    assert torch_state.restore(ctx_for(tmp_path, 2), model=model) == 1
    assert "resuming from epoch 1" in capsys.readouterr().err


def test_restore_refuses_state_that_was_not_saved(tmp_path):
    model, opt, sched, gen = make_run()
    torch_state.save(ctx_for(tmp_path, 0), 1, model=model, generators=[gen])
    with pytest.raises(ValueError, match="optimizer"):
        torch_state.restore(ctx_for(tmp_path, 1), model=model, optimizer=opt, generators=[gen])
    with pytest.raises(ValueError, match="Generator"):
        torch_state.restore(ctx_for(tmp_path, 1), model=model)


def test_checkpoint_loads_with_weights_only(tmp_path):
    model, opt, sched, gen = make_run()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = torch_state.save(ctx_for(tmp_path, 0), 1, model=model, optimizer=opt, scheduler=sched,
                            scaler=scaler, generators=[gen])
    state = checkpoint.load(path, weights_only=True)
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "extra"}
    assert set(state["rng"]) >= {"python", "numpy", "torch", "generators"}


def start_trainer(ctx):
    # One thread each: the two runs go side by side on a small machine without
    # fighting over cores. Both runs of a comparison use the same setting.
    env = {**os.environ, **ctx.to_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(DIGITS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc):
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()


def metric_lines(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        del record["time"]
    return records


def test_pause_at_9_and_resume_to_27_in_new_processes_equals_straight_run(tmp_path):
    config = {"dropout": 0.2, "lr_schedule": "cosine", "batch_size": 64, "n_units": 32, "momentum": 0.8}
    straight = TrialContext.for_local(tmp_path / "straight", config=config, until_epoch=27, max_epoch=27)
    paused = TrialContext.for_local(tmp_path / "paused", config=config, until_epoch=9, max_epoch=27)
    procs = [start_trainer(straight), start_trainer(paused)]
    for proc in procs:
        finish(proc)
    # A paused run leaves a spare for the run that resumes it; a finished one leaves its checkpoints only.
    assert (paused.checkpoint_dir / checkpoint.SPARE_NAME).exists()
    assert not (straight.checkpoint_dir / checkpoint.SPARE_NAME).exists()
    resumed = TrialContext.for_local(tmp_path / "paused", config=config, until_epoch=27, max_epoch=27)
    assert resumed.start_epoch == 9
    finish(start_trainer(resumed))

    a = checkpoint.latest(straight.checkpoint_dir)
    b = checkpoint.latest(resumed.checkpoint_dir)
    assert a.epoch == b.epoch == 27
    assert [e for e, _ in checkpoint.list_checkpoints(resumed.checkpoint_dir)] == [26, 27]
    assert not (resumed.checkpoint_dir / checkpoint.SPARE_NAME).exists()
    assert a.payload["model"].keys() == b.payload["model"].keys()
    for name, tensor in a.payload["model"].items():
        assert tensor.numpy().tobytes() == b.payload["model"][name].numpy().tobytes(), name
    assert torch.equal(a.payload["rng"]["torch"], b.payload["rng"]["torch"])
    assert a.payload["rng"]["generators"][0].equal(b.payload["rng"]["generators"][0])

    lines_a, lines_b = metric_lines(straight.metrics_file), metric_lines(resumed.metrics_file)
    assert [r["epoch"] for r in lines_b] == list(range(1, 28))
    assert lines_a == lines_b
    assert len({r["train_loss"] for r in lines_a}) == 27  # training really moved every epoch
