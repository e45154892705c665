"""The example trainers and the test trainer, run as a runner runs them: a new process with the env contract."""

import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpo_trainer import TrialContext, checkpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "trainer_image" / "examples"
CURVE_TRAINER = REPO / "tests" / "trainers" / "curve_trainer.py"
TABLE = REPO / "bench" / "tables" / "digits_s44.json"


def start(script, ctx):
    env = {**os.environ, **ctx.to_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, expect=0):
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == expect, err
    return err


def records(ctx):
    return [json.loads(line) for line in ctx.metrics_file.read_text().splitlines()]


# --- digits_mlp ---------------------------------------------------------------

def test_digits_mlp_empty_config_amp_and_a_bad_key(tmp_path):
    plain = TrialContext.for_local(tmp_path / "plain", until_epoch=3)
    amp = TrialContext.for_local(tmp_path / "amp", until_epoch=1,
                                 config={"amp": True, "activation": "tanh", "n_layers": 1})
    typo = TrialContext.for_local(tmp_path / "typo", until_epoch=1, config={"learning_rat": 0.1})
    procs = [start(EXAMPLES / "digits_mlp.py", c) for c in (plain, amp, typo)]  # side by side: torch imports are slow
    finish(procs[0])
    finish(procs[1])
    assert "unknown config keys ['learning_rat']" in finish(procs[2], expect=1)

    lines = records(plain)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert set(lines[0]) == {"epoch", "val_error", "val_loss", "train_loss", "time"}
    assert lines[-1]["val_error"] < 0.2  # it learns: 10 classes, chance is 0.9
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert all(b["time"] - a["time"] < 1.0 for a, b in zip(lines, lines[1:]))  # well under a second an epoch
    assert checkpoint.checkpoint_epoch(plain.checkpoint_dir) == 3
    assert 0.0 <= records(amp)[0]["val_error"] <= 1.0
    assert not typo.metrics_file.exists()


def test_digits_mlp_reads_the_data_and_splits_it_as_sklearn_does_without_importing_it():
    # The example skips importing sklearn (the larger part of its start-up); its data and its
    # validation split must stay exactly sklearn's, or every result and table would shift.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits_mlp = load_example("digits_mlp")
    pixels, labels = digits_mlp.load_digits()
    reference = load_digits()
    np.testing.assert_array_equal(pixels, reference.data)
    np.testing.assert_array_equal(labels, reference.target)
    uneven = np.repeat(np.arange(7), [2, 3, 5, 8, 13, 21, 34])  # rounding ties broken at random
    for y, test_size, seed in ((labels, 0.2, 0), (labels, 0.3, 7), (uneven, 0.25, 1), (uneven, 0.5, 3)):
        train, val = digits_mlp.stratified_split(y, test_size, seed)
        want_train, want_val = train_test_split(range(len(y)), test_size=test_size, random_state=seed, stratify=y)
        assert list(train) == list(want_train) and list(val) == list(want_val), (test_size, seed)


def test_digits_mlp_starts_without_sklearn():
    code = (f"import runpy, sys; runpy.run_path({str(EXAMPLES / 'digits_mlp.py')!r}, run_name='digits_mlp'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# --- fashion_mnist_cnn ----------------------------------------------------------

def write_idx(path, array):
    """The IDX format, written independently of the reader under test."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def tiny_fashion_mnist(folder, n=96):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, label in enumerate(labels):  # a bright block whose place depends on the class: learnable
        images[i, 2 * label:2 * label + 6, 4:24] = 250
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    return images, labels


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fashion_idx_reader(tmp_path):
    import torch  # noqa: F401  (the example needs it)
    images, labels = tiny_fashion_mnist(tmp_path / "fm", n=12)
    reader = load_example("fashion_mnist_cnn")
    assert np.array_equal(reader.read_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz"), images)
    assert np.array_equal(reader.read_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz"), labels)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"abc"))
    with pytest.raises(SystemExit, match="holds 3 bytes"):
        reader.read_idx(bad)


def test_fashion_mnist_cnn_on_a_tiny_synthetic_set(tmp_path):
    tiny_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    config = {"channels": 4, "hidden": 16, "batch_size": 16, "learning_rate": 0.05}
    ctx = TrialContext.for_local(tmp_path / "run", until_epoch=2, config=config, data_dir=tmp_path / "data")
    finish(start(EXAMPLES / "fashion_mnist_cnn.py", ctx))
    assert [r["epoch"] for r in records(ctx)] == [1, 2]
    assert checkpoint.checkpoint_epoch(ctx.checkpoint_dir) == 2


def test_fashion_mnist_cnn_without_its_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    """In-process, with the Debian package's folder pointed elsewhere: on a machine where the real data set
    is installed, a trainer run would find it there."""
    import torch  # noqa: F401  (the example needs it)
    example = load_example("fashion_mnist_cnn")
    monkeypatch.setattr(example, "SYSTEM_DIR", tmp_path / "not-installed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as ended:
        example.find_data(tmp_path / "empty")
    message = str(ended.value)  # SystemExit with a message: exit status 1, the message on stderr
    assert "train-images-idx3-ubyte.gz" in message and "HPO_DATA_DIR" in message
    assert "dataset-fashion-mnist" in message and str(tmp_path / "not-installed") in message


# --- tests/trainers/curve_trainer.py ------------------------------------------------

def curve(row):
    return json.loads(TABLE.read_text())["curves"][row]


def test_curve_trainer_crashes_once_then_resumes_from_its_checkpoint(tmp_path):
    config = {"table": str(TABLE), "row": 11, "crash_at_epoch": 4, "seconds_per_epoch": 0.01}
    first = TrialContext.for_local(tmp_path, until_epoch=6, config=config)
    err = finish(start(CURVE_TRAINER, first), expect=3)
    assert "crashing at epoch 4" in err
    assert [r["epoch"] for r in records(first)] == [1, 2, 3]
    retry = TrialContext.for_local(tmp_path, until_epoch=6, config=config)  # what a runner does
    assert retry.start_epoch == 3
    finish(start(CURVE_TRAINER, retry))
    assert [r["val_error"] for r in records(retry)] == curve(11)[:6]
    assert [r["epoch"] for r in records(retry)] == [1, 2, 3, 4, 5, 6]


def test_curve_trainer_pauses_and_resumes(tmp_path):
    config = {"table": str(TABLE), "row": 0}
    finish(start(CURVE_TRAINER, TrialContext.for_local(tmp_path, until_epoch=2, config=config)))
    resumed = TrialContext.for_local(tmp_path, until_epoch=5, config=config)
    finish(start(CURVE_TRAINER, resumed))
    assert [r["val_error"] for r in records(resumed)] == curve(0)[:5]
    assert checkpoint.latest(resumed.checkpoint_dir).payload == {"epoch": 5, "row": 0}


def test_curve_trainer_explains_a_bad_config(tmp_path):
    err = finish(start(CURVE_TRAINER, TrialContext.for_local(tmp_path, until_epoch=2, config={"row": 0})), expect=2)
    assert "config needs 'table'" in err
    other_row = {"table": str(TABLE), "row": 1}
    finish(start(CURVE_TRAINER, TrialContext.for_local(tmp_path, until_epoch=1, config={"table": str(TABLE), "row": 0})))
    err = finish(start(CURVE_TRAINER, TrialContext.for_local(tmp_path, until_epoch=2, config=other_row)), expect=2)
    assert "is of row 0, not 1" in err
    err = finish(start(CURVE_TRAINER, TrialContext.for_local(tmp_path / "long", until_epoch=82, config=other_row)),
                 expect=2)
    assert "has 81 epochs" in err


def test_curve_trainer_keeps_going_in_process_when_promoted(tmp_path):
    import dataclasses

    control = tmp_path / "control.json"
    control.write_text(json.dumps({"decided_epoch": 2, "until": 4}))  # the runner's decision for rung 2
    base = TrialContext.for_local(tmp_path, until_epoch=2, max_epoch=81, config={"table": str(TABLE), "row": 3})
    # The decision for 2 is already there; at 4 none comes, so the trainer exits after the timeout.
    ctx = dataclasses.replace(base, control_file=control, decision_timeout=0.3)
    proc = start(CURVE_TRAINER, ctx)
    finish(proc)
    assert [r["epoch"] for r in records(ctx)] == [1, 2, 3, 4]
    assert checkpoint.checkpoint_epoch(ctx.checkpoint_dir) == 4
