"""The SDK works where torch cannot be imported (sidecar, local runner, non-torch trainers)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "bench" / "tables" / "digits_s44.json"

NO_TORCH = "import sys; sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"


def run_without_torch(code, env=None):
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + textwrap.dedent(code)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60,
    )


def test_shim_really_blocks_torch():
    result = run_without_torch("import torch")
    assert result.returncode != 0 and "import of torch halted" in result.stderr


def test_sdk_imports_and_works_without_torch(tmp_path):
    result = run_without_torch(f"""
        import hpo_trainer
        from hpo_trainer import checkpoint, torch_state, MetricsWriter, MetricsReader
        path = checkpoint.save({str(tmp_path)!r}, 1, {{"epoch": 1}})
        assert path.read_bytes()[8:9] == checkpoint.TAG_PICKLE, "torch not present: pickle"
        assert checkpoint.latest({str(tmp_path)!r}).payload == {{"epoch": 1}}
        MetricsWriter({str(tmp_path / "m.jsonl")!r}).write(1, val_error=float("nan"))
        records = MetricsReader({str(tmp_path / "m.jsonl")!r}, "val_error").poll()
        assert records[0].epoch == 1
        try:
            torch_state.seed_everything(0)
        except ImportError as error:
            print("torch_state says:", error)
        print("torch loaded:", "torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    assert result.returncode == 0, result.stderr
    assert "torch_state says: hpo_trainer.torch_state needs torch" in result.stdout
    assert "torch loaded: False" in result.stdout


def test_curve_trainer_runs_without_torch(tmp_path):
    from hpo_trainer import TrialContext

    ctx = TrialContext.for_local(tmp_path, until_epoch=3, config={"table": str(TABLE), "row": 7})
    result = run_without_torch(
        f"import runpy; runpy.run_path({str(REPO / 'tests/trainers/curve_trainer.py')!r}, run_name='__main__')",
        env=ctx.to_env(),
    )
    assert result.returncode == 0, result.stderr
    expected = json.loads(TABLE.read_text())["curves"][7][:3]
    assert [json.loads(line)["val_error"] for line in ctx.metrics_file.read_text().splitlines()] == expected
