"""Benchmark runner: chosen samplers on chosen targets, one table in Markdown and JSON.

Usage (from the repository root)::

    python -m benchmarks run [--targets multimodal randomized families ports NAME ...]
        [--samplers ...] [--draws 1000] [--tune 1000] [--chains 4] [--particles 2000]
        [--repeats 1] [--seed 1] [--cold] [--output benchmarks/results/latest]

Targets: the multimodal suite (``mix2d``, ``mix10d``, ``mix50d``, see
:mod:`benchmarks.multimodal`), the randomized suite (``rand2d-1`` … ``rand50d-3``, any
``rand{d}d-{seed}``, see :mod:`benchmarks.randomized`), the model families
(``sign_regression``, ``flat_bimodal``, ``normal_mixture``, see :mod:`benchmarks.families`)
and the posteriordb ports (:mod:`benchmarks.posteriordb`); ``multimodal``, ``randomized``,
``families`` and ``ports`` name the groups. ``--repeats R`` runs seeds ``seed … seed + R − 1``
and reports each (``--median`` for the median only). Samplers:

- ``dilation``: ``pm.sample(step=DilationLangevin())``;
- ``sample_dilation``: the population sampler, ``--particles`` draws, one chain;
- ``nuts``: PyMC's NUTS; ``nutpie``: nutpie through ``pm.sample(nuts_sampler="nutpie")``;
- ``smc``: ``pm.sample_smc`` with ``--particles`` draws, one chain.

Every (target, sampler) pair runs once untimed with small sizes first, so disk caches (PyTensor's
C and Numba caches) are warm and the timed runs show what a user's second run costs; the wall
time then covers the whole call, compilation included. With ``--cold`` each pair also runs once in
a fresh Python process with no warm-up (``wall_cold_s``: the whole script a user runs once, model
building and imports excluded, compilation included). Metrics per run: mode-weight TV (mixtures,
families) with the within-mode mean error and the log evidence error where it is known exactly, or
the worst standardised mean error and relative sd error against the reference (ports), the minimum
bulk ESS over all posterior variables and ESS per second (MCMC samplers only: the particles of a
population sampler are not a Markov chain), wall time, gradient evaluations (MCMC:
leapfrog/Langevin steps of the draw phase, from ``n_steps``; ``sample_dilation``: all of them; SMC
uses none), divergences. Ratios to NUTS and to SMC are taken within one run. A sampler that fails
on a target (``pm.sample_smc`` cannot draw its initial particles from a ``Flat`` prior) gets a row
saying why, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import arviz as az
import numpy as np
import pymc as pm

from benchmarks import families, multimodal, posteriordb, randomized
from pymc_dilation import DilationLangevin, sample_dilation

__all__ = ["SAMPLERS", "RunSettings", "run_benchmarks", "markdown_table", "main"]

SAMPLERS = ("dilation", "sample_dilation", "nuts", "nutpie", "smc")
POPULATION_SAMPLERS = ("sample_dilation", "smc")


@dataclass(frozen=True)
class RunSettings:
    """Sizes shared by all samplers of a run."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    particles: int = 2000

    def small(self) -> RunSettings:
        """Sizes of the untimed warm-up run."""
        return RunSettings(draws=50, tune=50, chains=1, particles=100)


def _run_sampler(sampler: str, model: pm.Model, settings: RunSettings, seed: int):
    mcmc = dict(
        draws=settings.draws, tune=settings.tune, chains=settings.chains, cores=1,
        random_seed=seed, progressbar=False, compute_convergence_checks=False,
    )  # fmt: skip
    with model:
        if sampler == "dilation":
            return pm.sample(step=DilationLangevin(tune=settings.tune), **mcmc)
        if sampler in ("nuts", "nutpie"):
            return pm.sample(nuts_sampler="pymc" if sampler == "nuts" else "nutpie", **mcmc)
        if sampler == "sample_dilation":
            return sample_dilation(
                settings.particles, chains=1, random_seed=seed, progressbar=False
            )
        if sampler == "smc":
            return pm.sample_smc(
                settings.particles, chains=1, cores=1, random_seed=seed, progressbar=False,
                compute_convergence_checks=False,
            )  # fmt: skip
    raise ValueError(f"Unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}.")


def _stat_sum(idata, name: str) -> float:
    try:
        return float(np.asarray(idata.sample_stats[name]).sum())
    except KeyError:
        return float("nan")


def _min_bulk_ess(idata) -> float:
    ess = az.ess(idata, method="bulk")
    return float(min(np.min(np.asarray(ess[v])) for v in ess.data_vars))


def _gradients(sampler: str, idata) -> float:
    if sampler == "smc":
        return 0.0
    if sampler == "sample_dilation":
        return float(idata.sample_stats.attrs["n_grad_total"])
    return _stat_sum(idata, "n_steps")


def _log_evidence(sampler: str, idata) -> float:
    """The run's ``log_marginal_likelihood`` (mean over chains), NaN if it has none."""
    try:
        values = np.asarray(idata.sample_stats["log_marginal_likelihood"], dtype=object)
    except KeyError:
        return float("nan")
    per_chain = [
        np.asarray(v, dtype=float).ravel()[-1] for v in values.reshape(len(values), -1)[:, -1]
    ]
    return float(np.mean(per_chain))


def _exact_log_evidence(target: str) -> float | None:
    if target in multimodal.TARGETS:
        return multimodal.log_evidence(target)
    if randomized.is_randomized(target):
        return randomized.target(target).log_evidence
    if target in families.FAMILIES:
        return families.reference(target).get("log_evidence")
    return None


def _score(target: str, idata) -> dict[str, float]:
    if target in multimodal.TARGETS:
        return {"tv": multimodal.mode_weight_tv(multimodal.posterior_samples(idata), target)}
    if randomized.is_randomized(target):
        return randomized.score(target, np.asarray(idata.posterior["x"]))
    if target in families.FAMILIES:
        return families.score(target, idata)
    rows = posteriordb.moment_errors(idata, target)
    return {
        "mean_err": max(r["mean_err"] for r in rows),
        "sd_err": max(r["sd_err"] for r in rows),
    }


def _chain_scores(target: str, idata) -> dict[str, float]:
    """For MCMC runs of a multimodal target: the worst chain's own mode-weight error and the
    largest R-hat over all parameters (a chain stuck in one mode fails both)."""
    posterior = idata.posterior
    if "tv" not in _score(target, idata):
        return {}
    worst = 0.0
    for chain in range(posterior.sizes["chain"]):
        one = SimpleNamespace(posterior=posterior.isel(chain=[chain]))
        worst = max(worst, _score(target, one)["tv"])
    rhat = az.rhat(idata)
    return {
        "chain_tv_max": worst,
        "max_rhat": float(max(np.nanmax(np.asarray(rhat[v])) for v in rhat.data_vars)),
    }


def run_one(target: str, sampler: str, settings: RunSettings, seed: int) -> dict[str, Any]:
    """Run one sampler on one target and measure it (see the module docstring)."""
    model = _build(target)
    start = time.perf_counter()
    idata = _run_sampler(sampler, model, settings, seed)
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"target": target, "sampler": sampler, "seed": seed, "wall_s": wall}
    record.update(_score(target, idata))
    exact = _exact_log_evidence(target)
    if exact is not None and sampler in POPULATION_SAMPLERS:
        record["log_z_err"] = _log_evidence(sampler, idata) - exact
    ess = float("nan") if sampler in POPULATION_SAMPLERS else _min_bulk_ess(idata)
    if sampler not in POPULATION_SAMPLERS and settings.chains > 1:
        record.update(_chain_scores(target, idata))
    record.update(
        min_ess_bulk=ess,
        ess_per_s=ess / wall,
        n_grad=_gradients(sampler, idata),
        divergences=_stat_sum(idata, "diverging"),
    )
    return record


def _build(target: str) -> pm.Model:
    if target in multimodal.TARGETS:
        return multimodal.build_model(target)
    if randomized.is_randomized(target):
        return randomized.build_model(target)
    if target in families.FAMILIES:
        return families.build_model(target)
    return posteriordb.build_model(target)


def run_cold(target: str, sampler: str, settings: RunSettings, seed: int) -> float:
    """Wall time of one call in a fresh Python process, no warm-up (compilation included)."""
    import subprocess
    import sys

    sizes = tuple(vars(settings).values())
    code = (
        "import json, time; from benchmarks import runner; "
        f"model = runner._build({target!r}); start = time.perf_counter(); "
        f"runner._run_sampler({sampler!r}, model, runner.RunSettings(*{sizes!r}), {seed}); "
        "print(json.dumps(time.perf_counter() - start))"
    )
    out = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return float(out)


def _median_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(records[0])
    for key, value in records[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in records)
    out["repeats"] = len(records)
    return out


def run_benchmarks(
    targets: Sequence[str],
    samplers: Sequence[str],
    settings: RunSettings,
    repeats: int = 1,
    seed: int = 1,
    log: Callable[[str], None] = print,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
    cold: bool = False,
    median: bool = False,
) -> list[dict[str, Any]]:
    """All pairs of ``targets`` and ``samplers`` at ``repeats`` seeds, with ratios.

    One row per seed, or with ``median=True`` one row per pair with the medians. ``cold``
    adds ``wall_cold_s`` (:func:`run_cold`, first seed). ``on_result`` is called with the
    results so far after every pair (to save partial runs).
    """
    results = []
    for target in targets:
        for sampler in samplers:
            try:
                cold_s = run_cold(target, sampler, settings, seed) if cold else None
                run_one(target, sampler, settings.small(), seed)  # warm caches, not timed
                records = [run_one(target, sampler, settings, seed + r) for r in range(repeats)]
            except Exception as err:  # e.g. pm.sample_smc on a model with a Flat prior
                results.append(_not_run(target, sampler, err))
                log(f"{target:<45} {sampler:<16} not run: {results[-1]['not_run']}")
            else:
                if cold_s is not None:
                    records[0]["wall_cold_s"] = cold_s
                rows = [_median_records(records)] if median else records
                results.extend(rows)
                for row in rows:
                    log(_summary_line(row))
            _add_ratios(results)
            if on_result is not None:
                on_result(results)
    return results


def _not_run(target: str, sampler: str, err: Exception) -> dict[str, Any]:
    """The row of a sampler that cannot run on a target, with the first line of the reason."""
    reason = (str(err).strip().splitlines() or [""])[0][:100]
    return {"target": target, "sampler": sampler, "not_run": f"{type(err).__name__}: {reason}"}


def _add_ratios(results: list[dict[str, Any]]) -> None:
    by_pair = {(r["target"], r["sampler"], r["seed"]): r for r in results if "not_run" not in r}
    for record in by_pair.values():
        for base in ("nuts", "smc"):
            ref = by_pair.get((record["target"], base, record["seed"]))
            if ref is None:
                continue
            record[f"wall_vs_{base}"] = record["wall_s"] / ref["wall_s"]
            if base == "nuts":
                record["ess_per_s_vs_nuts"] = record["ess_per_s"] / ref["ess_per_s"]


def _summary_line(record: dict[str, Any]) -> str:
    score = (
        f"TV {record['tv']:.3f}"
        if "tv" in record
        else f"mean err {record['mean_err']:.3f} sd err {record['sd_err']:.3f}"
    )
    if "log_z_err" in record:
        score += f" logZ err {record['log_z_err']:+.3f}"
    return (
        f"{record['target']:<45} {record['sampler']:<16} seed {record['seed']} {score}  "
        f"wall {record['wall_s']:.2f}s  ESS/s {record['ess_per_s']:.0f}"
    )


_COLUMNS = [
    ("target", "target", "{}"),
    ("sampler", "sampler", "{}"),
    ("seed", "seed", "{}"),
    ("tv", "mode TV", "{:.3f}"),
    ("chain_tv_max", "worst chain's TV", "{:.3f}"),
    ("max_rhat", "max R-hat", "{:.3f}"),
    ("within_mean_err", "within-mode mean err (sd)", "{:.2f}"),
    ("log_z_err", "log Z err", "{:+.3f}"),
    ("mean_err", "worst mean err (sd)", "{:.3f}"),
    ("sd_err", "worst sd err", "{:.3f}"),
    ("min_ess_bulk", "min bulk ESS", "{:.0f}"),
    ("ess_per_s", "ESS/s", "{:.1f}"),
    ("wall_s", "wall (s)", "{:.2f}"),
    ("wall_cold_s", "wall cold (s)", "{:.2f}"),
    ("wall_vs_nuts", "wall / NUTS", "{:.2f}"),
    ("wall_vs_smc", "wall / SMC", "{:.2f}"),
    ("ess_per_s_vs_nuts", "ESS/s / NUTS", "{:.2f}"),
    ("n_grad", "gradients", "{:.0f}"),
    ("divergences", "divergences", "{:.0f}"),
    ("not_run", "not run", "{}"),
]


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (blank where a metric does not apply)."""
    columns = [c for c in _COLUMNS if any(c[0] in r for r in results)]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for record in results:
        cells = []
        for key, _, fmt in columns:
            value = record.get(key)
            missing = value is None or (isinstance(value, float) and not np.isfinite(value))
            cells.append("" if missing else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _environment() -> dict[str, str]:
    return {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "pymc": pm.__version__,
        "arviz": az.__version__,
    }


GROUPS = {
    "multimodal": list(multimodal.TARGETS),
    "randomized": randomized.SUITE,
    "families": list(families.FAMILIES),
    "ports": list(posteriordb.POSTERIOR_NAMES),
}


def _expand_targets(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    singles = [t for group in GROUPS.values() for t in group]
    for name in names:
        if name in GROUPS:
            out += GROUPS[name]
        elif name in singles or randomized.is_randomized(name):
            out.append(name)
        else:
            choices = [*GROUPS, *singles, "rand<d>d-<seed>"]
            raise ValueError(f"Unknown target {name!r}; choose from {', '.join(choices)}.")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks run ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=["multimodal"])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="also time a fresh process")
    parser.add_argument("--median", action="store_true", help="one row per pair (median)")
    parser.add_argument(
        "--output", default="benchmarks/results/latest", help="writes OUTPUT.md and OUTPUT.json"
    )
    args = parser.parse_args(argv)
    settings = RunSettings(args.draws, args.tune, args.chains, args.particles)
    targets = _expand_targets(args.targets)
    env = _environment()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"{env['date']}, Python {env['python']}, PyMC {env['pymc']}, ArviZ {env['arviz']}; "
        f"draws {settings.draws}, tune {settings.tune}, chains {settings.chains}, "
        f"particles {settings.particles}, seeds {args.seed}..{args.seed + args.repeats - 1}"
        f"{' (median)' if args.median else ''}."
    )

    def save(results: list[dict[str, Any]]) -> None:
        output.with_suffix(".md").write_text(f"{header}\n\n{markdown_table(results)}\n")
        output.with_suffix(".json").write_text(
            json.dumps({"environment": env, "settings": vars(args), "results": results}, indent=1)
        )

    results = run_benchmarks(
        targets, args.samplers, settings, args.repeats, args.seed, on_result=save,
        cold=args.cold, median=args.median,
    )  # fmt: skip
    print(f"\n{header}\n\n{markdown_table(results)}\n\nWritten: {output}.md, {output}.json")
    return 0
