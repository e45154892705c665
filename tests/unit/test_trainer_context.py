"""TrialContext: parsing the env contract, its error messages, epochs, and running a trainer by hand."""

import json
import os

import pytest

from hpo_trainer import TrialContext, TrialContextError, checkpoint, contract, run_by_hand


def env(tmp_path, **overrides):
    base = {
        contract.ENV_TRIAL_ID: "digits-asha-0007",
        contract.ENV_EXPERIMENT: "digits-asha",
        contract.ENV_CONFIG: json.dumps({"learning_rate": 0.1, "activation": "relu"}),
        contract.ENV_START_EPOCH: "3",
        contract.ENV_UNTIL_EPOCH: "9",
        contract.ENV_MAX_EPOCH: "81",
        contract.ENV_CHECKPOINT_DIR: str(tmp_path / "ckpt"),
        contract.ENV_METRICS_FILE: str(tmp_path / "metrics.jsonl"),
        contract.ENV_DATA_DIR: "/data",
        contract.ENV_CONTROL_FILE: str(tmp_path / "control.json"),
        contract.ENV_DECISION_TIMEOUT: "0.05",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_reads_every_variable(tmp_path):
    ctx = TrialContext.from_env(env(tmp_path))
    assert ctx.config == {"learning_rate": 0.1, "activation": "relu"}
    assert (ctx.trial_id, ctx.experiment) == ("digits-asha-0007", "digits-asha")
    assert (ctx.start_epoch, ctx.until_epoch, ctx.max_epoch) == (3, 9, 81)
    assert ctx.checkpoint_dir == tmp_path / "ckpt"
    assert ctx.metrics_file == tmp_path / "metrics.jsonl"
    assert str(ctx.data_dir) == "/data"
    assert (ctx.control_file, ctx.decision_timeout) == (tmp_path / "control.json", 0.05)
    assert list(ctx.epochs()) == [4, 5, 6, 7, 8, 9]
    assert list(ctx.epochs(1)) == [2, 3, 4, 5, 6, 7, 8, 9]


def test_defaults(tmp_path):
    ctx = TrialContext.from_env(env(
        tmp_path, **{contract.ENV_START_EPOCH: None, contract.ENV_MAX_EPOCH: None, contract.ENV_CONFIG: None,
                     contract.ENV_DATA_DIR: None, contract.ENV_TRIAL_ID: None, contract.ENV_CONTROL_FILE: None,
                     contract.ENV_DECISION_TIMEOUT: None}))
    assert (ctx.start_epoch, ctx.max_epoch, ctx.config, ctx.data_dir, ctx.trial_id) == (0, 9, {}, None, "local")
    assert (ctx.control_file, ctx.decision_timeout) == (None, contract.DEFAULT_DECISION_TIMEOUT)
    assert list(ctx.epochs()) == list(range(1, 10))


def test_from_env_defaults_to_os_environ(tmp_path, monkeypatch):
    for name, value in env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert TrialContext.from_env().until_epoch == 9


def test_missing_required_variables_are_all_named(tmp_path):
    broken = env(tmp_path, **{contract.ENV_UNTIL_EPOCH: None, contract.ENV_METRICS_FILE: None})
    with pytest.raises(TrialContextError) as error:
        TrialContext.from_env(broken)
    message = str(error.value)
    assert "HPO_UNTIL_EPOCH" in message and "HPO_METRICS_FILE" in message
    assert "HPO_CHECKPOINT_DIR" not in message.split("not set")[0]
    assert "run_by_hand" in message  # says how to fix it


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        (contract.ENV_UNTIL_EPOCH, "nine", ["HPO_UNTIL_EPOCH", "'nine'", "whole number"]),
        (contract.ENV_START_EPOCH, "2.5", ["HPO_START_EPOCH", "'2.5'"]),
        (contract.ENV_MAX_EPOCH, "x", ["HPO_MAX_EPOCH"]),
        (contract.ENV_CONFIG, "{learning_rate: 1}", ["HPO_CONFIG", "not valid JSON", "JSON object"]),
        (contract.ENV_CONFIG, "[1, 2]", ["HPO_CONFIG", "JSON object", "list"]),
        (contract.ENV_START_EPOCH, "9", ["HPO_START_EPOCH (9)", "less than HPO_UNTIL_EPOCH (9)"]),
        (contract.ENV_START_EPOCH, "-1", ["HPO_START_EPOCH", "-1"]),
        (contract.ENV_UNTIL_EPOCH, "0", ["HPO_UNTIL_EPOCH", "at least 1"]),
        (contract.ENV_MAX_EPOCH, "5", ["HPO_MAX_EPOCH (5)", "HPO_UNTIL_EPOCH (9)"]),
        (contract.ENV_DECISION_TIMEOUT, "soon", ["HPO_DECISION_TIMEOUT", "'soon'"]),
        (contract.ENV_DECISION_TIMEOUT, "-1", ["HPO_DECISION_TIMEOUT", "-1"]),
        (contract.ENV_DECISION_TIMEOUT, "nan", ["HPO_DECISION_TIMEOUT", "finite"]),
    ],
)
def test_malformed_values_name_the_variable(tmp_path, name, value, words):
    with pytest.raises(TrialContextError) as error:
        TrialContext.from_env(env(tmp_path, **{name: value}))
    for word in words:
        assert word in str(error.value)


def test_to_env_round_trips(tmp_path):
    ctx = TrialContext.from_env(env(tmp_path))
    assert TrialContext.from_env(ctx.to_env()) == ctx
    assert set(ctx.to_env()) == set(contract.ALL)


def test_for_local_resumes_after_newest_checkpoint(tmp_path):
    fresh = TrialContext.for_local(tmp_path, until_epoch=3, config={"a": 1})
    assert (fresh.start_epoch, fresh.max_epoch) == (0, 3)
    assert fresh.checkpoint_dir == tmp_path / "checkpoints"
    checkpoint.save(fresh.checkpoint_dir, 3, {"x": 1}, serializer="pickle")
    resumed = TrialContext.for_local(tmp_path, until_epoch=9)
    assert list(resumed.epochs()) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(TrialContextError, match="nothing to train"):
        TrialContext.for_local(tmp_path, until_epoch=3)


def test_run_by_hand_sets_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(contract.ENV_TRIAL_ID, "outer")
    monkeypatch.setenv(contract.ENV_DATA_DIR, "/outer-data")  # not in ctx: must be hidden during the call
    ctx = TrialContext.for_local(tmp_path, until_epoch=2, config={"lr": 0.5}, trial_id="inner")

    def trainer():
        inside = TrialContext.from_env()
        return inside, os.environ.get(contract.ENV_DATA_DIR)

    inside, data_dir = run_by_hand(trainer, ctx)
    assert inside == ctx and data_dir is None
    assert os.environ[contract.ENV_TRIAL_ID] == "outer"
    assert os.environ[contract.ENV_DATA_DIR] == "/outer-data"
    assert contract.ENV_UNTIL_EPOCH not in os.environ


def promote_in_place_ctx(tmp_path, timeout=5.0, max_epoch=27):
    return TrialContext(
        config={}, until_epoch=3, max_epoch=max_epoch, checkpoint_dir=tmp_path / "ckpt",
        metrics_file=tmp_path / "m.jsonl", control_file=tmp_path / "control.json", decision_timeout=timeout,
    )


def write_control(tmp_path, decided, until):
    (tmp_path / "control.json").write_text(json.dumps({"decided_epoch": decided, "until": until}))


def test_epochs_continue_in_place_when_the_runner_promotes(tmp_path):
    ctx = promote_in_place_ctx(tmp_path)
    seen = []
    for epoch in ctx.epochs():
        seen.append(epoch)
        if epoch == 3:  # the runner's decision for rung 3 arrives while the trainer waits
            write_control(tmp_path, 3, 5)
        if epoch == 5:
            write_control(tmp_path, 5, 5)  # decided: no further promotion -> pause
    assert seen == [1, 2, 3, 4, 5]


def test_epochs_stop_on_timeout_or_stale_decision(tmp_path):
    write_control(tmp_path, 2, 9)  # a decision about an earlier rung does not count
    ctx = promote_in_place_ctx(tmp_path, timeout=0.2)
    assert list(ctx.epochs()) == [1, 2, 3]


def test_promotion_is_capped_at_max_epoch(tmp_path):
    write_control(tmp_path, 3, 99)
    ctx = promote_in_place_ctx(tmp_path, max_epoch=4)
    epochs = ctx.epochs()
    assert [next(epochs) for _ in range(4)] == [1, 2, 3, 4]
    write_control(tmp_path, 4, 4)
    assert list(epochs) == []


def test_no_control_file_means_no_wait(tmp_path):
    ctx = TrialContext(config={}, until_epoch=2, checkpoint_dir=tmp_path, metrics_file=tmp_path / "m")
    assert list(ctx.epochs()) == [1, 2]
