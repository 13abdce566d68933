"""DilationLangevin configurations against each other, warm, in one process.

Usage (from the repository root)::

    python -m benchmarks trajectory-length [--targets NAME ...] [--seeds 1 2]
        [--configs '{"uturn": {}, "chees": {"trajectory_length": "chees"}}']
        [--output benchmarks/results/trajectory_length]

For choosing a default among ``DilationLangevin`` options (the trajectory-length criterion,
``steps_per_draw``, ...) over many targets and seeds: each target's model is built and
compiled once (an untimed 20 + 20 call), then every configuration samples it on every seed,
2 chains × (1000 + 1000) by default, ``cores=1``, the ``pm.sample`` call timed with the step
built inside (:func:`benchmarks.end_to_end.measure_call`: min bulk and tail ESS, gradients of
the draws, divergences, worst mean and sd errors against the reference). Cheaper than
``end-to-end`` (no fresh processes, no NUTS or nutpie), so the walls are warm walls only; use
``end-to-end`` for what a user waits for. Writes ``OUTPUT.md`` and ``OUTPUT.json`` after every
call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.end_to_end import Settings, build_model, expand_targets, measure_call

__all__ = ["DEFAULT_CONFIGS", "run", "summary_table", "main"]

DEFAULT_CONFIGS = {"uturn": {}, "chees": {"trajectory_length": "chees"}}


def run(
    targets: Sequence[str],
    configs: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    on_result=None,
) -> list[dict[str, Any]]:
    """Every configuration on every target and seed; one row per call."""
    rows: list[dict[str, Any]] = []
    for target in targets:
        model = build_model(target)
        measure_call(target, "dilation", model, Settings(20, 20, 1, seeds[0], {}))
        for seed in seeds:
            for label, options in configs.items():
                settings = Settings(draws, tune, chains, seed, options)
                row = measure_call(target, "dilation", model, settings)
                row.update(target=target, config=label, seed=seed)
                rows.append(row)
                print(
                    f"{target:<40} {label:<10} seed {seed}: wall {row['wall_s']:.1f} s, "
                    f"min ESS bulk {row['min_ess_bulk']:.0f} tail {row['min_ess_tail']:.0f}, "
                    f"{row['n_grad'] / (draws * chains):.1f} gradients a draw",
                    flush=True,
                )
                if on_result is not None:
                    on_result(rows)
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per target and configuration, means over seeds: min bulk and tail ESS per second,
    gradients per draw, worst mean and sd errors."""
    configs = list(dict.fromkeys(r["config"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    lines = [
        "| posterior | " + " | ".join(configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for target in targets:
        cells = []
        for config in configs:
            mine = [r for r in rows if r["target"] == target and r["config"] == config]
            if not mine:
                cells.append("")
                continue

            def mean(key, rows=mine):
                return statistics.mean(r[key] for r in rows)

            bulk = statistics.mean(r["min_ess_bulk"] / r["wall_s"] for r in mine)
            tail = statistics.mean(r["min_ess_tail"] / r["wall_s"] for r in mine)
            per_draw = statistics.mean(r["n_grad"] for r in mine) / 2000
            cells.append(
                f"{bulk:.0f} / {tail:.0f} ({per_draw:.1f}; "
                f"{mean('mean_err'):.3f} / {mean('sd_err'):.3f})"
            )
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks trajectory-length ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks trajectory-length", description=__doc__
    )
    parser.add_argument("--targets", nargs="+", default=["ports", "dimension"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--configs", type=json.loads, default=DEFAULT_CONFIGS)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/trajectory_length")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "Cells: min bulk / min tail ESS per second of the warm `pm.sample` call (means over "
        "seeds), (gradients a draw; worst mean / sd error). Command: `python -m benchmarks "
        f"trajectory-length {' '.join(sys.argv[1:] if argv is None else argv)}`"
    )

    def save(rows):
        output.with_suffix(".md").write_text(f"{header}\n\n{summary_table(rows)}\n")
        output.with_suffix(".json").write_text(json.dumps(rows, indent=1))

    rows = run(
        expand_targets(args.targets), args.configs, args.seeds, args.draws, args.tune,
        args.chains, on_result=save,
    )  # fmt: skip
    print(f"\n{header}\n\n{summary_table(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
