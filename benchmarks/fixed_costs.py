"""Where a ``pm.sample(step=DilationLangevin())`` call spends its time, stage by stage.

Usage (from the repository root)::

    python -m benchmarks fixed-costs [--targets NAME ...] [--calls 2] [--draws 1000]
        [--tune 1000] [--chains 2] [--library PATH]

Each target runs in a fresh Python process that makes ``--calls`` calls (the first is the cold
one). The stages are timed by wrapping the package's functions, so nothing in the package
changes for it:

- ``import``: ``import pymc`` and ``import pymc_dilation`` (once per process);
- ``model``: building the ``pm.Model``;
- ``graph``: :func:`~pymc_dilation.model.compile_model_logp` minus compilation (freezing the
  model, its log density and gradient graphs, the initial point for shapes);
- ``pytensor``: the rest of ``ModelLogp._compile``: the graph's key and its lookup
  (:mod:`pymc_dilation.graph_cache`), and when the graph is not found, ``pytensor.function``
  (graph rewrites and PyTensor's Numba linking, its own disk cache included);
- ``wrapper``: compiling or loading the point wrapper (``_cached_point_function``; 0 when the
  graph key found the compiled function);
- ``step_other``: the rest of ``DilationLangevin(...)`` (``initial_point``, the center and its
  check);
- ``steps``: the step method's ``step`` calls, i.e. PyMC's per-iteration calls into it;
- ``pymc_other``: the rest of ``pm.sample``: PyMC's set-up, its loop, trace recording and the
  conversion to InferenceData.

``--library PATH`` puts PATH first on ``sys.path`` in the child processes, to measure another
checkout of the package (for before/after figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

STAGES = ("import", "model", "graph", "pytensor", "wrapper", "step_other", "steps", "pymc_other")

_CHILD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repo"])
from benchmarks.end_to_end import build_model  # imports neither pymc nor pymc_dilation
if spec["library"]:
    sys.path.insert(0, spec["library"])
start = time.perf_counter()
import pymc as pm
import pymc_dilation
from pymc_dilation import model as pdm, step as pds
import_s = time.perf_counter() - start

acc = {}

def timed(owner, name, label):
    fn = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)

timed(pdm, "_cached_point_function", "wrapper")
timed(pdm.ModelLogp, "_compile", "compile")
timed(pds, "compile_model_logp", "compile_model_logp")
timed(pds.DilationLangevin, "__init__", "init")
timed(pds.DilationLangevin, "step", "steps")
rows = []
for call in range(spec["calls"]):
    acc.clear()
    t = time.perf_counter()
    model = build_model(spec["target"])
    model_s = time.perf_counter() - t
    t = time.perf_counter()
    with model:
        pm.sample(
            step=pds.DilationLangevin(), draws=spec["draws"], tune=spec["tune"],
            chains=spec["chains"], cores=1, random_seed=1, progressbar=False,
            compute_convergence_checks=False,
        )
    total = time.perf_counter() - t
    rows.append({
        "import": import_s if call == 0 else 0.0,
        "model": model_s,
        "graph": acc["compile_model_logp"] - acc["compile"],
        "pytensor": acc["compile"] - acc.get("wrapper", 0.0),
        "wrapper": acc.get("wrapper", 0.0),
        "step_other": acc["init"] - acc["compile_model_logp"],
        "steps": acc["steps"],
        "pymc_other": total - acc["init"] - acc["steps"],
        "pm.sample": total,
    })
print("FIXED_COSTS " + json.dumps({"library": pymc_dilation.__file__, "rows": rows}))
"""


def measure(
    target: str, calls: int, draws: int, tune: int, chains: int, library: str | None
) -> dict:
    """Stage seconds of ``calls`` calls on ``target`` in one fresh process."""
    repo = str(Path(__file__).resolve().parents[1])
    spec = dict(
        target=target, calls=calls, draws=draws, tune=tune, chains=chains,
        library=library or "", repo=repo,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
        cwd=repo, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FIXED_COSTS ")]
    if not lines:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "no output")
    return json.loads(lines[-1][len("FIXED_COSTS ") :])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks fixed-costs ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks fixed-costs", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=["eight_schools-eight_schools_noncentered"])
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--library", default=None)
    args = parser.parse_args(argv)
    print("| target | call | " + " | ".join(STAGES) + " | pm.sample |")
    print("|---|---|" + "---|" * (len(STAGES) + 1))
    for target in args.targets:
        result = measure(target, args.calls, args.draws, args.tune, args.chains, args.library)
        for i, row in enumerate(result["rows"]):
            kind = "cold" if i == 0 else f"warm {i}"
            cells = " | ".join(f"{row[s]:.2f}" for s in (*STAGES, "pm.sample"))
            print(f"| {target} | {kind} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
