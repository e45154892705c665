"""Paths the test tiers share. Tests read only files inside the repository."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLES = REPO / "bench" / "tables"
BENCH = REPO / "bench"
CURVE_TRAINER = REPO / "tests" / "trainers" / "curve_trainer.py"
