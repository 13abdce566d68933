"""End-to-end benchmark: the whole ``pm.sample`` call, cold and warm, against NUTS and nutpie.

Usage (from the repository root)::

    python -m benchmarks end-to-end [--targets eight_schools ports regressions NAME ...]
        [--samplers dilation nuts nutpie] [--draws 1000] [--tune 1000] [--chains 2]
        [--seed 1] [--dilation-options '{"steps_per_draw": 16}'] [--label NAME]
        [--output benchmarks/results/end_to_end]

What a user waits for is timed: ``pm.sample(step=DilationLangevin(**options), ...)`` with the
step method built inside the timed region, or ``pm.sample(nuts_sampler="pymc" | "nutpie", ...)``,
``cores=1``, no progress bar, no convergence checks. Each (target, sampler) pair runs in a fresh
Python process (:func:`run_pair`), which makes two calls with the same seed:

- **cold**: the first call of the process. It pays everything a fresh process pays inside
  ``pm.sample``: graph rewrites, compilation or loading it from PyTensor's and Numba's disk
  caches, the initial point, PyMC's loop and trace recording. Before it, an untimed priming
  process (one chain of 20 + 20 iterations) fills those disk caches, so that cold means the
  same for every sampler and run: a user's second script on this model, not a fresh
  installation (``--no-prime`` leaves the caches as they are). Library imports (pymc,
  pymc_dilation, nutpie) and building the ``pm.Model`` happen before the timed region and are
  excluded for every sampler (the model's build time is reported separately);
- **warm**: the second call in the same process (in-memory caches warm, the step built again).

Targets: eight schools (non-centered) and the other seven posteriordb ports
(:mod:`benchmarks.posteriordb`, group ``ports``), and held-out correlated regressions generated
from seeds (:mod:`benchmarks.regressions`, group ``regressions``). Metrics per call: the minimum
bulk ESS over every scalar of every posterior variable (deterministics included; the minimum
tail ESS beside it, which a sampler cannot raise by antithetic moves), ESS per
second of wall time, its ratios to PyMC's NUTS and to nutpie on the same target and call kind,
gradient evaluations of the draw phase (``n_steps`` summed), divergences, and the worst
standardised mean error and relative sd error against the reference (posteriordb's reference
draws; the regressions' exact moments). ``--dilation-options`` takes the ``DilationLangevin``
keyword arguments as JSON, so the same table can be re-run after the step method changes.
Writes ``OUTPUT.md`` and ``OUTPUT.json`` after every pair.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SAMPLERS",
    "Settings",
    "build_model",
    "expand_targets",
    "measure_call",
    "run_pair",
    "add_ratios",
    "markdown_table",
    "main",
]

SAMPLERS = ("dilation", "nuts", "nutpie")
EIGHT_SCHOOLS = "eight_schools-eight_schools_noncentered"
CALLS = ("cold", "warm")


@dataclass(frozen=True)
class Settings:
    """Sizes and options shared by every call of a run."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    seed: int = 1
    dilation_options: dict[str, Any] = field(default_factory=dict)


def _groups() -> dict[str, list[str]]:
    from benchmarks import dimension, posteriordb, regressions

    return {
        "eight_schools": [EIGHT_SCHOOLS],
        "ports": list(posteriordb.POSTERIOR_NAMES),
        "regressions": list(regressions.SUITE),
        "dimension": list(dimension.SUITE),
    }


def expand_targets(names: Sequence[str]) -> list[str]:
    """Target names from group names (``eight_schools``, ``ports``, ``regressions``) and names.

    Any ``corr_regression-SEED`` is accepted, so held-out seeds need no code change. Duplicates
    are dropped, order kept.
    """
    from benchmarks import dimension, posteriordb, regressions

    groups = _groups()
    out: list[str] = []
    for name in names:
        if name in groups:
            out += groups[name]
        elif (
            name in posteriordb.POSTERIOR_NAMES
            or regressions.is_regression(name)
            or dimension.is_target(name)
        ):
            out.append(name)
        else:
            choices = [
                *groups, *posteriordb.POSTERIOR_NAMES, "corr_regression-<seed>",
                "gauss_regression-d<D>-<seed>", "hierarchical-g<G>-<seed>",
            ]  # fmt: skip
            raise ValueError(f"Unknown target {name!r}; choose from {', '.join(choices)}.")
    return list(dict.fromkeys(out))


def build_model(target: str):
    """The ``pm.Model`` of a target."""
    from benchmarks import dimension, posteriordb, regressions

    if regressions.is_regression(target):
        return regressions.build_model(target)
    if dimension.is_target(target):
        return dimension.build_model(target)
    return posteriordb.build_model(target)


def _moment_errors(target: str, idata) -> dict[str, float]:
    from benchmarks import dimension, posteriordb, regressions

    if regressions.is_regression(target):
        return regressions.moment_errors(idata, target)
    if dimension.is_target(target):
        return dimension.moment_errors(idata, target)
    rows = posteriordb.moment_errors(idata, target)
    return {
        "mean_err": max(r["mean_err"] for r in rows),
        "sd_err": max(r["sd_err"] for r in rows),
    }


def _stat_sum(idata, name: str) -> float:
    from pymc_dilation._compat import group_dataset

    stats = group_dataset(idata, "sample_stats")
    return float(np.asarray(stats[name]).sum()) if name in stats else float("nan")


def _min_ess(idata) -> tuple[float, float]:
    """The minimum bulk and tail ESS over every scalar of every posterior variable."""
    from pymc_dilation._compat import summary_table

    table = summary_table(idata)
    return float(table["ess_bulk"].min()), float(table["ess_tail"].min())


def _sample(sampler: str, model, settings: Settings):
    import pymc as pm

    from pymc_dilation import DilationLangevin

    kwargs = dict(
        draws=settings.draws, tune=settings.tune, chains=settings.chains, cores=1,
        random_seed=settings.seed, progressbar=False, compute_convergence_checks=False,
    )  # fmt: skip
    with model:
        if sampler == "dilation":
            return pm.sample(step=DilationLangevin(**settings.dilation_options), **kwargs)
        if sampler in ("nuts", "nutpie"):
            return pm.sample(nuts_sampler="pymc" if sampler == "nuts" else "nutpie", **kwargs)
    raise ValueError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")


def measure_call(target: str, sampler: str, model, settings: Settings) -> dict[str, float]:
    """Time one ``pm.sample`` call (step built inside) and measure its draws."""
    start = time.perf_counter()
    idata = _sample(sampler, model, settings)
    wall = time.perf_counter() - start
    ess, tail = _min_ess(idata)
    return {
        "wall_s": wall,
        "min_ess_bulk": ess,
        "min_ess_tail": tail,
        "ess_per_s": ess / wall,
        "n_grad": _stat_sum(idata, "n_steps"),
        "divergences": _stat_sum(idata, "diverging"),
        **_moment_errors(target, idata),
    }


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """What the fresh process of :func:`run_pair` runs: build the model, then the calls."""
    import pymc  # noqa: F401  imports are outside the timed region for every sampler

    import pymc_dilation  # noqa: F401

    if spec["sampler"] == "nutpie":
        import nutpie  # noqa: F401
    settings = Settings(**spec["settings"])
    start = time.perf_counter()
    model = build_model(spec["target"])
    out: dict[str, Any] = {"build_model_s": time.perf_counter() - start}
    for call in CALLS[: spec.get("calls", len(CALLS))]:
        out[call] = measure_call(spec["target"], spec["sampler"], model, settings)
    return out


def _run_child(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """:func:`_child` in a fresh Python process: its result, or ``{"not_run": reason}``."""
    code = "import sys, json; from benchmarks import end_to_end as e; e._child_main(sys.argv[1])"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(spec)],
            capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).parents[1],
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"not_run": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("END_TO_END ")]
    if proc.returncode != 0 or not lines:
        return {"not_run": (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return json.loads(lines[-1][len("END_TO_END ") :])


def run_pair(
    target: str,
    sampler: str,
    settings: Settings,
    timeout: float | None = 3600.0,
    prime: bool = True,
) -> dict[str, Any]:
    """Run one (target, sampler) pair in a fresh Python process; one row with both calls.

    With ``prime``, an untimed process with one short chain runs first, to fill the disk
    caches. A pair that fails gets a row with ``not_run`` (the error's last line) and the run
    goes on.
    """
    row: dict[str, Any] = {"target": target, "sampler": sampler}
    if prime:
        small = Settings(20, 20, 1, settings.seed, settings.dilation_options)
        spec = {"target": target, "sampler": sampler, "settings": asdict(small), "calls": 1}
        primed = _run_child(spec, timeout)
        if "not_run" in primed:
            return row | primed
    spec = {"target": target, "sampler": sampler, "settings": asdict(settings)}
    result = _run_child(spec, timeout)
    if "not_run" in result:
        return row | result
    row["build_model_s"] = result["build_model_s"]
    for call in CALLS:
        row.update({f"{call}_{key}": value for key, value in result[call].items()})
    return row


def _child_main(spec_json: str) -> None:
    print("END_TO_END " + json.dumps(_child(json.loads(spec_json))), flush=True)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's ESS/s over NUTS's and nutpie's on the same target, cold and warm, in place."""
    by_pair = {(r["target"], r["sampler"]): r for r in rows if "not_run" not in r}
    for (target, _), row in by_pair.items():
        for base in ("nuts", "nutpie"):
            ref = by_pair.get((target, base))
            for call in CALLS:
                key = f"{call}_ess_per_s_vs_{base}"
                if ref is None:
                    row.pop(key, None)
                else:
                    row[key] = row[f"{call}_ess_per_s"] / ref[f"{call}_ess_per_s"]


_COLUMNS = [
    ("target", "target", "{}"),
    ("sampler", "sampler", "{}"),
    ("cold_wall_s", "cold wall (s)", "{:.2f}"),
    ("cold_ess_per_s", "cold ESS/s", "{:.1f}"),
    ("cold_ess_per_s_vs_nuts", "cold / NUTS", "{:.2f}"),
    ("cold_ess_per_s_vs_nutpie", "cold / nutpie", "{:.2f}"),
    ("warm_wall_s", "warm wall (s)", "{:.2f}"),
    ("warm_ess_per_s", "warm ESS/s", "{:.1f}"),
    ("warm_ess_per_s_vs_nuts", "warm / NUTS", "{:.2f}"),
    ("warm_ess_per_s_vs_nutpie", "warm / nutpie", "{:.2f}"),
    ("warm_min_ess_bulk", "min bulk ESS (warm)", "{:.0f}"),
    ("warm_min_ess_tail", "min tail ESS (warm)", "{:.0f}"),
    ("warm_n_grad", "gradients (warm draws)", "{:.0f}"),
    ("warm_divergences", "divergences (warm)", "{:.0f}"),
    ("warm_mean_err", "worst mean err (sd, warm)", "{:.3f}"),
    ("warm_sd_err", "worst sd err (warm)", "{:.3f}"),
    ("not_run", "not run", "{}"),
]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (blank where a metric does not apply)."""
    columns = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            missing = value is None or (isinstance(value, float) and not np.isfinite(value))
            cells.append("" if missing else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    targets: Sequence[str],
    samplers: Sequence[str],
    settings: Settings,
    log: Callable[[str], None] = print,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
    pair: Callable[..., dict[str, Any]] = run_pair,
    prime: bool = True,
) -> list[dict[str, Any]]:
    """Every (target, sampler) pair, target by target, with ratios after each pair."""
    rows: list[dict[str, Any]] = []
    for target in targets:
        for sampler in samplers:
            row = pair(target, sampler, settings, prime=prime)
            rows.append(row)
            add_ratios(rows)
            if "not_run" in row:
                log(f"{target:<42} {sampler:<9} not run: {row['not_run']}")
            else:
                log(
                    f"{target:<42} {sampler:<9} cold {row['cold_wall_s']:.2f}s "
                    f"ESS/s {row['cold_ess_per_s']:.1f}  warm {row['warm_wall_s']:.2f}s "
                    f"ESS/s {row['warm_ess_per_s']:.1f}"
                )
            if on_result is not None:
                on_result(rows)
    return rows


def _environment() -> dict[str, str]:
    import arviz as az
    import pymc as pm

    env = {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "pymc": pm.__version__,
        "arviz": az.__version__,
    }
    try:
        import nutpie

        env["nutpie"] = nutpie.__version__
    except ImportError:
        env["nutpie"] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parents[1],
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    env["commit"] = commit
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks end-to-end ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks end-to-end", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=["ports", "regressions"])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dilation-options", type=json.loads, default={},
        help="DilationLangevin keyword arguments as JSON, e.g. '{\"steps_per_draw\": 8}'",
    )  # fmt: skip
    parser.add_argument("--label", default="", help="a name for this configuration")
    parser.add_argument(
        "--no-prime", action="store_true", help="no untimed run to fill disk caches first"
    )
    parser.add_argument("--output", default="benchmarks/results/end_to_end")
    args = parser.parse_args(argv)
    settings = Settings(args.draws, args.tune, args.chains, args.seed, args.dilation_options)
    targets = expand_targets(args.targets)
    env = _environment()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"{env['date']}, commit {env['commit']}, Python {env['python']}, PyMC {env['pymc']}, "
        f"ArviZ {env['arviz']}, nutpie {env['nutpie']}; {settings.chains} chains x "
        f"({settings.tune} tune + {settings.draws} draws), cores=1, seed {settings.seed}, "
        f"{'no priming run' if args.no_prime else 'disk caches primed'}; "
        f"DilationLangevin({json.dumps(settings.dilation_options)})"
        f"{' [' + args.label + ']' if args.label else ''}. Command: "
        f"`python -m benchmarks end-to-end {shlex.join(sys.argv[1:] if argv is None else argv)}`"
    )

    def save(rows: list[dict[str, Any]]) -> None:
        output.with_suffix(".md").write_text(f"{header}\n\n{markdown_table(rows)}\n")
        output.with_suffix(".json").write_text(
            json.dumps(
                {
                    "environment": env,
                    "settings": asdict(settings),
                    "label": args.label,
                    "rows": rows,
                },
                indent=1,
            )  # fmt: skip
        )

    rows = run(targets, args.samplers, settings, on_result=save, prime=not args.no_prime)
    print(f"\n{header}\n\n{markdown_table(rows)}\n\nWritten: {output}.md, {output}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
