"""Every script in examples/ and the demo run end to end, in fast mode, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYMC_DILATION_FAST": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_examples_found():
    assert "quickstart.py" in {p.name for p in EXAMPLES}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    args = [str(script)] + (["--fast"] if script.name == "quickstart.py" else [])
    _run(args, cwd=tmp_path)


def test_demo_writes_figures(tmp_path):
    out = tmp_path / "demo-output"
    proc = _run(
        ["-m", "pymc_dilation", "demo", "--fast", "--no-progressbar", "--output", str(out)], ROOT
    )
    for name in ("posterior.png", "annealing.png", "trajectories.png"):
        path = out / name
        assert path.exists() and path.stat().st_size > 10_000, name
    assert "DilationLangevin" in proc.stdout and "sample_dilation" in proc.stdout
