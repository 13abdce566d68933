"""The funnel suite: centered hierarchies and Neal's funnel, generated from seeds.

Targets (any seed and size is accepted, so held-out ones need no code change):

- ``centered-{effects}-g{G}-{data}-{seed}``: ``theta_j ~ Normal(mu, tau)`` (``effects`` =
  ``normal``) or ``StudentT(4, mu, tau)`` (``student``), written centered as users write it,
  ``mu ~ N(0, 5)``, ``tau ~ HalfNormal(2.5)``, and ``n_j`` observations ``y_ij ~ N(theta_j, 1)``
  per group: ``weak`` data are 1–3 observations of sd 4 per group (the funnel: NUTS diverges),
  ``strong`` 10–40 of sd 0.5 (posterior of each ``theta_j`` far narrower than ``tau``).
  Reference: a long nutpie run on the better-conditioned form (non-centered for weak data,
  ``theta`` as a deterministic; centered for strong), cached in
  ``benchmarks/results/references/``.
- ``neal-d{D}``: Neal's funnel, ``v ~ N(0, 3)``, ``x_i ~ N(0, exp(v / 2))``, ``D - 1`` of
  them. Exact: ``v``'s mean 0 and sd 3, log Z 0 (the moments compared are ``v``'s: ``x``'s
  sd cannot be estimated from a few thousand draws).
- ``gp_latent-n{N}-{seed}``: a latent Gaussian process written as users write it by hand,
  ``f ~ MvNormal(0, eta² ExpQuad(ls) + 1e-6 I)`` at ``N`` sorted points, ``ls ~ InvGamma(5, 5)``,
  ``eta ~ HalfNormal(1)``, Poisson counts ``y ~ Poisson(exp(1 + f))``: the hyperparameters
  scale the whole field. Reference: a long nutpie run on the non-centered form
  (``f = cholesky(K) z``).
- ``eight_schools_centered``: the centered eight schools; reference posteriordb's draws.
- ``radon_centered``: the gallery's radon model with varying intercepts and slopes, centered;
  reference a long nutpie run on its non-centered form.

``python -m benchmarks funnels`` runs both samplers and PyMC's NUTS (on the model as written
and, for the ESS goal, on the non-centered form) cold and warm, and writes
``benchmarks/results/funnels.md``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np

__all__ = [
    "SUITE",
    "is_target",
    "build_model",
    "reference_moments",
    "moment_errors",
    "log_evidence",
    "main",
]

SUITE = [
    *(f"centered-normal-g{g}-{data}-{seed}" for g in (8, 50) for data in ("weak", "strong")
      for seed in (1, 2)),
    "centered-student-g20-weak-1",
    "centered-normal-g200-weak-1",
    "gp_latent-n30-1",
    "neal-d10",
    "neal-d100",
    "eight_schools_centered",
    "radon_centered",
]  # fmt: skip
"""The default funnel suite."""

_CENTERED = re.compile(r"centered-(normal|student)-g(\d+)-(weak|strong)-(\d+)$")
_NEAL = re.compile(r"neal-d(\d+)$")
_GP = re.compile(r"gp_latent-n(\d+)-(\d+)$")
REFERENCES = Path(__file__).parent / "results" / "references"
NEAL_V_SD = 3.0


def is_target(name: str) -> bool:
    """Whether ``name`` is a target of the funnel suite (any seed and size)."""
    return name in ("eight_schools_centered", "radon_centered") or any(
        pattern.match(name) for pattern in (_CENTERED, _NEAL, _GP)
    )


def _hierarchy_data(name: str):
    match = _CENTERED.match(name)
    if match is None:
        raise ValueError(f"Not a centered hierarchy of the funnel suite: {name!r}.")
    effects, groups, data, seed = (
        match.group(1),
        int(match.group(2)),
        match.group(3),
        match.group(4),
    )
    rng = np.random.default_rng([groups, int(seed), 23, data == "strong"])
    low, high, noise = (1, 4, 4.0) if data == "weak" else (10, 41, 0.5)
    sizes = rng.integers(low, high, groups)
    theta = 1.0 + 1.0 * rng.standard_normal(groups)
    if effects == "student":
        theta = 1.0 + 1.0 * rng.standard_t(4, groups)
    group = np.repeat(np.arange(groups), sizes)
    y = theta[group] + rng.normal(0.0, noise, group.size)
    return effects, groups, group, y, noise


def build_model(name: str, centered: bool = True):
    """The ``pm.Model`` of target ``name`` (``centered=False``: its non-centered form, with the
    same variables as deterministics, for references and NUTS baselines)."""
    import pymc as pm

    if name == "eight_schools_centered":
        y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
        sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
        with pm.Model() as model:
            mu = pm.Normal("mu", 0.0, 5.0)
            tau = pm.HalfCauchy("tau", 5.0)
            theta = _effect(pm, "theta", mu, tau, centered, shape=8)
            pm.Normal("y", theta, sigma, observed=y)
        return model
    if name == "radon_centered":
        return _radon(centered)
    gp = _GP.match(name)
    if gp:
        return _gp_latent(int(gp.group(1)), int(gp.group(2)), centered)
    neal = _NEAL.match(name)
    if neal:
        dim = int(neal.group(1))
        with pm.Model() as model:
            v = pm.Normal("v", 0.0, NEAL_V_SD)
            _effect(pm, "x", 0.0, pm.math.exp(v / 2), centered, shape=dim - 1)
        return model
    effects, groups, group, y, noise = _hierarchy_data(name)
    with pm.Model(coords={"group": np.arange(groups)}) as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        tau = pm.HalfNormal("tau", 2.5)
        theta = _effect(pm, "theta", mu, tau, centered, dims="group", student=effects == "student")
        pm.Normal("y", theta[group], noise, observed=y)
    return model


def _effect(pm, name, loc, scale, centered, student=False, **shape):
    dist = (lambda n, **kw: pm.StudentT(n, nu=4, **kw)) if student else pm.Normal
    if centered:
        return dist(name, mu=loc, sigma=scale, **shape)
    raw = dist(f"{name}_raw", mu=0.0, sigma=1.0, **shape)
    return pm.Deterministic(
        name, loc + scale * raw, **{k: v for k, v in shape.items() if k == "dims"}
    )


def _gp_latent(n: int, seed: int, centered: bool):
    import pymc as pm
    import pytensor.tensor as pt

    rng = np.random.default_rng([n, seed, 29])
    x = np.sort(rng.uniform(0.0, 10.0, n))
    true_cov = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 1.5**2) + 1e-6 * np.eye(n)
    f_true = np.linalg.cholesky(true_cov) @ rng.standard_normal(n)
    y = rng.poisson(np.exp(1.0 + f_true))
    with pm.Model(coords={"point": np.arange(n)}) as model:
        ls = pm.InverseGamma("ls", 5.0, 5.0)
        eta = pm.HalfNormal("eta", 1.0)
        cov = eta**2 * pm.gp.cov.ExpQuad(1, ls)(x[:, None]) + 1e-6 * np.eye(n)
        if centered:
            f = pm.MvNormal("f", mu=np.zeros(n), cov=cov, dims="point")
        else:
            f_raw = pm.Normal("f_raw", 0.0, 1.0, dims="point")
            f = pm.Deterministic("f", pt.linalg.cholesky(cov) @ f_raw, dims="point")
        pm.Poisson("y", pt.exp(1.0 + f), observed=y, dims="point")
    return model


def _radon(centered: bool):
    import pymc as pm

    from benchmarks.dimension import radon_data

    log_radon, coords, declare = radon_data()
    with pm.Model(coords=coords) as model:
        floor_idx, county_idx = declare()
        mu_a = pm.Normal("mu_a", mu=0.0, sigma=10.0)
        sigma_a = pm.Exponential("sigma_a", 1)
        alpha = _effect(pm, "alpha", mu_a, sigma_a, centered, dims="county")
        mu_b = pm.Normal("mu_b", mu=0.0, sigma=10.0)
        sigma_b = pm.Exponential("sigma_b", 1)
        beta = _effect(pm, "beta", mu_b, sigma_b, centered, dims="county")
        sigma_y = pm.Exponential("sigma_y", 1)
        y_hat = alpha[county_idx] + beta[county_idx] * floor_idx
        pm.Normal("y_like", mu=y_hat, sigma=sigma_y, observed=log_radon, dims="obs_id")
    return model


def _declared(model) -> list[str]:
    """The variables of the centered form (free and deterministic) the moments compare."""
    names = [rv.name for rv in model.free_RVs] + [d.name for d in model.deterministics]
    return [n for n in names if not n.endswith("_raw")]


@cache
def reference_moments(name: str) -> dict[str, tuple[float, float]]:
    """``{"name[i]": (mean, sd)}``: exact for Neal's funnel, posteriordb for eight schools, a
    cached long nutpie run on the non-centered form else."""
    from benchmarks.dimension import _flatten

    if _NEAL.match(name):
        # Only v: x's sd (exp(9 / 4)) cannot be estimated from thousands of draws (x is a
        # normal scale mixture of kurtosis about 3 exp(9), and its sample sd is that noisy).
        return {"v": (0.0, NEAL_V_SD)}
    if name == "eight_schools_centered":
        from benchmarks.posteriordb import load_reference_draws

        draws = load_reference_draws("eight_schools-eight_schools_noncentered")
        out = {
            k: (float(np.mean(draws[k])), float(np.std(draws[k], ddof=1))) for k in ("mu", "tau")
        }
        for j in range(8):  # posteriordb counts from 1
            values = draws[f"theta[{j + 1}]"]
            out[f"theta[{j}]"] = (float(np.mean(values)), float(np.std(values, ddof=1)))
        return out
    path = REFERENCES / f"funnel-{name}.json"
    if path.exists():
        return {k: tuple(v) for k, v in json.loads(path.read_text()).items()}
    import nutpie

    from pymc_dilation._compat import group_dataset

    keep = _declared(build_model(name))
    # Strong data: the centered form is the well-conditioned one (the non-centered one is a
    # narrow curved ridge, where nutpie's own reference run was off by half an sd).
    centered = "-strong-" in name
    compiled = nutpie.compile_pymc_model(build_model(name, centered=centered))
    # 100 000 draws: a latent GP's length scale has a tail to 15-17 (InverseGamma prior),
    # and its sd from 4 x 4000 draws was 0.627 where 4 x 25 000 give 0.538.
    trace = nutpie.sample(
        compiled, draws=25_000, tune=2000, chains=4, seed=12345, progress_bar=False,
        target_accept=0.95,
    )  # fmt: skip
    moments = {
        key: (float(draws.mean()), float(draws.std(ddof=1)))
        for key, draws in _flatten(group_dataset(trace, "posterior")[keep]).items()
    }
    REFERENCES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(moments, indent=0))
    return moments


def log_evidence(name: str) -> float | None:
    """Exact log evidence where known (Neal's funnel: 0), else None."""
    return 0.0 if _NEAL.match(name) else None


def moment_errors(idata, name: str) -> dict[str, float]:
    """Worst ``|mean − ref| / ref sd`` and worst ``|sd / ref sd − 1|``."""
    from benchmarks.dimension import _flatten
    from benchmarks.regressions import worst_moment_errors
    from pymc_dilation._compat import group_dataset

    posterior = group_dataset(idata, "posterior")
    return worst_moment_errors(_flatten(posterior), reference_moments(name))


SAMPLERS = ("dilation", "population", "nuts", "nuts_noncentered", "smc")
"""``dilation``: ``pm.sample(step=DilationLangevin())`` on the model as written;
``population``: ``sample_dilation``; ``nuts``: PyMC's NUTS as written; ``nuts_noncentered``:
PyMC's NUTS on the non-centered form (the ESS/s goal's baseline; nutpie's where PyMC 6 finds
it installed); ``smc``: ``pm.sample_smc`` as written, ``--particles`` draws, one chain."""


def _call(sampler: str, name: str, args):
    import pymc as pm

    from pymc_dilation import DilationLangevin, sample_dilation

    with build_model(name, centered=sampler != "nuts_noncentered"):
        if sampler == "population":
            return sample_dilation(draws=args.particles, random_seed=args.seed, progressbar=False)
        if sampler == "smc":
            return pm.sample_smc(
                args.particles, chains=1, cores=1, random_seed=args.seed, progressbar=False,
                compute_convergence_checks=False,
            )  # fmt: skip
        step = DilationLangevin() if sampler == "dilation" else None
        return pm.sample(
            step=step, draws=args.draws, tune=args.tune, chains=args.chains, cores=1,
            random_seed=args.seed, progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip


def measure(name: str, sampler: str, args) -> dict:
    """One timed call: wall, errors against the reference, min bulk ESS of the declared
    variables, divergences, log Z error where exact."""
    import time
    import warnings

    import arviz as az

    from pymc_dilation._compat import group_dataset

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = _call(sampler, name, args)
    wall = time.perf_counter() - start
    posterior = group_dataset(idata, "posterior")
    stats = group_dataset(idata, "sample_stats")
    row = {"wall_s": wall, **moment_errors(idata, name)}
    keep = [v for v in _declared(build_model(name)) if v in posterior]
    if sampler not in ("population", "smc"):
        row["min_ess"] = float(az.ess(posterior[keep]).to_array().min())
        row["ess_per_s"] = row["min_ess"] / wall
    if "diverging" in stats:
        row["divergences"] = int(np.asarray(stats["diverging"]).sum())
    exact = log_evidence(name)
    if "log_marginal_likelihood" in stats and exact is not None:
        from benchmarks.symmetric import last_finite

        row["log_z_err"] = float(abs(last_finite(stats["log_marginal_likelihood"]) - exact))
    if "centering" in stats.attrs:
        row["centering"] = stats.attrs["centering"]
    return row


_COLUMNS = [
    ("target", "{}"), ("sampler", "{}"), ("mean_err", "{:.3f}"), ("sd_err", "{:.3f}"),
    ("divergences", "{}"), ("log_z_err", "{:.3f}"), ("min_ess", "{:.0f}"),
    ("cold_wall_s", "{:.1f}"), ("warm_wall_s", "{:.1f}"), ("warm_ess_per_s", "{:.1f}"),
    ("warm_ess_per_s_vs_nuts_noncentered", "{:.2f}"),
]  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (the warm call's errors; both calls' walls)."""
    from benchmarks.mixtures import markdown_table as table

    return table(rows, _COLUMNS)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks funnels [--targets ...] [--samplers ...] [--chains 4] [--draws
    1000] [--tune 1000] [--particles 2000] [--seed 1] [--output benchmarks/results/funnels]``.

    Each (target, sampler) is called twice in one process with the same seed: ``cold`` (the
    first call, compilation included) and ``warm``. Writes ``OUTPUT.md`` and ``OUTPUT.json``
    after every call."""
    from benchmarks.mixtures import sampling_arguments

    parser = sampling_arguments(
        "python -m benchmarks funnels", SUITE, SAMPLERS, "benchmarks/results/funnels"
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in args.targets:
        reference_moments(name)  # a missing reference is computed before any timing
        baseline = None
        for sampler in args.samplers:
            cold = measure(name, sampler, args)
            warm = measure(name, sampler, args)
            row = {"target": name, "sampler": sampler, **warm}
            row["cold_wall_s"], row["warm_wall_s"] = cold["wall_s"], warm["wall_s"]
            row["cold_mean_err"], row["cold_sd_err"] = cold["mean_err"], cold["sd_err"]
            if "ess_per_s" in warm:
                row["warm_ess_per_s"] = warm["ess_per_s"]
            if sampler == "nuts_noncentered":
                baseline = warm.get("ess_per_s")
            rows.append(row)
            print(
                f"{name:<32} {sampler:<17} mean {row['mean_err']:.3f} sd {row['sd_err']:.3f} "
                f"div {row.get('divergences', -1):4d} ESS {row.get('min_ess', np.nan):6.0f} "
                f"log Z err {row.get('log_z_err', np.nan):.3f} "
                f"wall {row['cold_wall_s']:.1f}/{row['warm_wall_s']:.1f} s",
                flush=True,
            )
        for row in rows:
            if row["target"] == name and baseline and "warm_ess_per_s" in row:
                row["warm_ess_per_s_vs_nuts_noncentered"] = row["warm_ess_per_s"] / baseline
        output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        output.with_suffix(".md").write_text(markdown_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
