"""The scorer's modules load without the training stack: no torch, no MLflow, no Spark,
no Great Expectations (they cost seconds and memory in every worker)."""

import subprocess
import sys

HEAVY = ("torch", "mlflow", "pyspark", "great_expectations", "training", "pipelines")


def test_importing_the_scorer_loads_no_training_stack() -> None:
    code = f"import sys, serving.app; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
