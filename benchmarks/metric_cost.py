"""What a corrected preconditioner direction costs a leapfrog step, against the gradient.

Usage (from the repository root)::

    python -m benchmarks metric-cost [--targets NAME ...] [--ranks 0 30 90]
        [--steps 10000] [--output benchmarks/results/metric_cost]

``DilationLangevin``'s preconditioner is a diagonal plus ``k`` corrected directions
(:class:`~pymc_dilation.engine.metric.Metric`), and each leapfrog step applies it once to the
momentum: ``O(d k)`` on top of one evaluation of the model's log density and gradient. For
each target this times the compiled trajectory (:func:`~pymc_dilation.engine.trajectory.
hmc_trajectory`, 50 leapfrog steps a call from the model's initial point, a step size small
enough that nothing diverges) with metrics of random orthonormal directions of each rank in
``--ranks`` (capped at ``d``), and the point function alone in a Python loop. Reported: the
microseconds of one evaluation, of one leapfrog step at each rank, and the cost of one
direction as a share of a rank-0 step (the slope between the lowest and the highest rank).
Single process, warm (one untimed call first), one BLAS thread as in a chain's trajectories.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.end_to_end import build_model, expand_targets

__all__ = ["measure", "main"]

STEPS_PER_CALL = 50


def measure(target: str, ranks: Sequence[int], steps: int, seed: int = 0) -> dict:
    """Microseconds per evaluation and per leapfrog step at each rank, for one target, and
    one direction's cost (the slope between the lowest and highest rank)."""
    from pymc_dilation.engine.metric import Metric
    from pymc_dilation.engine.trajectory import hmc_trajectory
    from pymc_dilation.model import compile_model_logp
    from pymc_dilation.threads import one_blas_thread

    model = build_model(target)
    logp = compile_model_logp(model)
    point = model.initial_point()
    extra = logp.ravel_extra(point)
    x = logp.from_model(logp.ravel(point), extra)
    dim = x.size
    grad_out = np.zeros(dim)
    lp, grad = logp.logp_grad(x, extra)
    rng = np.random.default_rng(seed)
    row = {"target": target, "dim": dim}
    with one_blas_thread():
        logp.point_fn(x, extra, grad_out)
        start = time.perf_counter()
        for _ in range(steps):
            logp.point_fn(x, extra, grad_out)
        row["evaluation_us"] = 1e6 * (time.perf_counter() - start) / steps
        per_step = {}
        for rank in dict.fromkeys(min(r, dim) for r in ranks):
            basis = np.linalg.qr(rng.normal(size=(dim, max(rank, 1))))[0][:, :rank]
            metric = Metric(np.full(dim, 0.3), basis, np.full(rank, 0.5))
            hmc_trajectory(logp.point_fn, extra, metric, x, lp, grad, 1e-4, 10, rng)
            calls = max(1, steps // STEPS_PER_CALL)
            start = time.perf_counter()
            for _ in range(calls):
                hmc_trajectory(logp.point_fn, extra, metric, x, lp, grad, 1e-4, STEPS_PER_CALL, rng)
            per_step[rank] = 1e6 * (time.perf_counter() - start) / (calls * STEPS_PER_CALL)
    row["step_us"] = per_step
    low, high = min(per_step), max(per_step)
    if high > low:
        slope = (per_step[high] - per_step[low]) / (high - low)
        row["direction_us"] = slope
        row["direction_share"] = slope / per_step[low]
    return row


def table(rows: Sequence[dict], command: str) -> str:
    ranks = sorted({r for row in rows for r in row["step_us"]})
    head = ["target", "d", "evaluation (µs)", *[f"step, rank {r} (µs)" for r in ranks]]
    head += ["one direction (µs)", "one direction / rank-0 step"]
    lines = [
        f"Command: `{command}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [row["target"], str(row["dim"]), f"{row['evaluation_us']:.1f}"]
        cells += [f"{row['step_us'][r]:.1f}" if r in row["step_us"] else "" for r in ranks]
        cells += [
            f"{row['direction_us']:.3f}" if "direction_us" in row else "",
            f"{row['direction_share']:.4f}" if "direction_share" in row else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks metric-cost")
    parser.add_argument("--targets", nargs="+", default=["dimension"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 30, 90])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--output", default="benchmarks/results/metric_cost")
    args = parser.parse_args(argv)
    if min(args.ranks) < 0 or args.steps < 1:
        raise ValueError("--ranks must be non-negative and --steps positive.")
    command = "python -m benchmarks metric-cost " + " ".join(argv or [])
    rows = []
    for target in expand_targets(args.targets):
        rows.append(measure(target, args.ranks, args.steps))
        print(json.dumps(rows[-1]), flush=True)
        Path(args.output + ".json").write_text(json.dumps(rows, indent=1))
        Path(args.output + ".md").write_text(table(rows, command.strip()))
    print(table(rows, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
