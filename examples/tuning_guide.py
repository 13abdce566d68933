# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tuning guide
#
# What the options of `DilationLangevin` and `sample_dilation` do, how to read their sample
# stats, and when another sampler is the better choice.
#
# This page is the script `examples/tuning_guide.py`, run when the documentation is built
# (`PYMC_DILATION_FAST=1` for small runs).

# %%
import inspect
import itertools
import logging
import os
import time
import warnings

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm

from pymc_dilation import DilationLangevin, sample_dilation
from pymc_dilation.diagnostics import UnreliableResultWarning
from pymc_dilation.engine.schedules import geometric_schedule, make_schedule, power_schedule

try:  # rich tables in a notebook, plain text in a terminal
    from IPython.display import display as show
except ImportError:  # pragma: no cover
    show = print

FAST = os.environ.get("PYMC_DILATION_FAST") == "1"
logging.getLogger("pymc").setLevel(logging.ERROR)  # no sampling logs in the page
pd.set_option("display.width", 120)
pd.set_option("display.max_columns", 20)
CHAINS = 8 if FAST else 16
TUNE, DRAWS = (600, 200) if FAST else (1000, 1000)
PARTICLES = 500 if FAST else 2000

# %% [markdown]
# ## The options at a glance
#
# | option | what it sets |
# |---|---|
# | `schedule` | the λ levels: `"geometric"`, `"power"` or an explicit array |
# | `n_levels` | number of levels of a named schedule |
# | `lambda_min` | first level of a named schedule |
# | `center` | one center for every particle's path (default: each particle has its own) |
# | `particles` | particles of each chain's tuning population (`DilationLangevin`, DL) |
# | `precondition` | `"laplace"`/`"none"` (population); `"low-rank"`/`"dense"`/`"diagonal"` (DL) |
# | `max_rank` | most directions the preconditioner corrects beyond its diagonal (DL) |
# | `mode_jumps` | a jump between the modes of the map every iteration (`DilationLangevin`) |
# | `kernel` | `"hmc"` (Hamiltonian trajectories, default) or `"mala"` (`DilationLangevin`) |
# | `steps_per_draw` | MALA steps per draw, or HMC's mean leapfrog steps (not adapted) (DL) |
# | `steps_per_level` | Langevin steps per particle and level of the population |
# | `target_accept` | target Metropolis acceptance rate of the step-size adaptation |
# | `anneal_metropolis` | accept/reject during the annealing (MALA) or not (ULA) |
# | `refine_sweeps`, `refine_steps` | exact refinement at λ = 1 (`sample_dilation`) |
# | `reparameterize` | sample centered hierarchies (funnels) non-centered where that helps |
# | `backend` | `"numba"` (default) or `"c"`: how the log density is compiled (DL) |
#
# `backend="c"` is worth a try on models whose log density is a long recursion written with
# `pytensor.scan` (posteriordb's GARCH(1, 1) model: a gradient 157 µs with C against 264 µs
# with Numba, a whole `pm.sample` call 5.6 s against 7.5 s); on other models Numba is as
# fast or faster (latent GPs equal, small models 1.5-6 times faster), and it is the default.
# Models Numba cannot compile fall back to C by themselves.
#
# The defaults, read from the installed version:


# %%
def defaults(function, names):
    params = inspect.signature(function).parameters
    return {name: params[name].default for name in names if name in params}


OPTIONS = [
    "particles",
    "mode_jumps",
    "schedule",
    "n_levels",
    "lambda_min",
    "kernel",
    "steps_per_draw",
    "steps_per_level",
    "target_accept",
    "anneal_metropolis",
    "refine_sweeps",
    "refine_steps",
    "precondition",
    "max_rank",
    "reparameterize",
    "backend",
]
show(
    pd.DataFrame(
        {
            "DilationLangevin": defaults(DilationLangevin.__init__, OPTIONS),
            "sample_dilation": defaults(sample_dilation, OPTIONS),
        }
    ).fillna("")
)

# %% [markdown]
# `DilationLangevin` walks the path at the **first tuning iteration** of each chain: a
# population of `particles` particles, each from its own center, takes `steps_per_level`
# Langevin steps at each of the `n_levels` levels in batched compiled calls; the modes they reach
# become the chain's mode map (local Gaussians and importance-sampling weights), and the chain
# starts from a particle drawn by those weights. The rest of `pm.sample`'s `tune` iterations
# adapt the step size and the preconditioner at the posterior, and the map gains a mode if the
# chain reaches one it lacks. On PyMC 5 pass `tune=` to `DilationLangevin` as well (PyMC 6 tells
# the step method itself) so that the adaptation windows end where tuning ends.

# %% [markdown]
# ## Schedules
#
# A schedule is an increasing sequence of levels in (0, 1] ending at 1. The geometric schedule
# has equal *ratios* between levels: the state contracts towards the center by the same factor
# at every level, which is what the path's geometry asks for. A power schedule
# `lambda_min + (1 - lambda_min) (k / K) ** power` spends more levels near λ = 1 (where the modes
# are far apart) and fewer near the Dirac. Any array works too.

# %%
k = np.arange(100)
custom = np.concatenate([np.geomspace(1e-3, 0.1, 30), np.linspace(0.1, 1.0, 71)[1:]])
schedules = {
    "geometric (default)": geometric_schedule(100, 1e-3),
    "power, power=2": power_schedule(100, 1e-3, power=2.0),
    "power, power=4": power_schedule(100, 1e-3, power=4.0),
    "custom array": make_schedule(custom, n_levels=0, lambda_min=0.5),  # levels as given
}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for label, levels in schedules.items():
    axes[0].plot(levels, label=label)
    axes[1].semilogy(levels, label=label)
axes[0].set(xlabel="level", ylabel="λ", title="linear scale")
axes[1].set(xlabel="level", ylabel="λ", title="log scale")
axes[0].legend()
fig.tight_layout()

# %% [markdown]
# ## Where the chains go: the mode map and the jumps
#
# The quick start's posterior has modes at −2 and +10 with weights 0.62 and 0.38. A chain of
# `DilationLangevin` moves between them by jumps: every iteration, after its Langevin steps, it
# proposes a point from the mixture of the local Gaussians of its map's modes and accepts it
# with the exact Metropolis–Hastings probability. The map decides how often the chain crosses,
# never where the draws go on average: a mode missing from the map is proposed by no jump, and
# a chain visits it only if its Langevin steps find it. The helper below runs `pm.sample` with
# some options and reports the modes in the chains' maps, each chain's share of draws in the far
# mode (smallest and largest), the pooled share, the jump acceptance rate, the largest R-hat and
# the time (compilation included).

# %%
with pm.Model() as model:
    x = pm.Normal("x", 0.0, 10.0)
    modes = pm.math.stack(
        [pm.logp(pm.Normal.dist(-2.0, 1.0), x), pm.logp(pm.Normal.dist(10.0, 1.0), x)]
    )
    pm.Potential("two_modes", pm.math.logsumexp(modes) + np.log(0.5))

TRUE_FAR_WEIGHT = 0.383  # exact, see the quick start


def run(label, initvals=None, **options):
    start = time.perf_counter()
    with model:
        data = pm.sample(
            draws=DRAWS,
            tune=TUNE,
            chains=CHAINS,
            cores=1,
            step=DilationLangevin(tune=TUNE, **options),
            initvals=initvals,
            random_seed=3,
            progressbar=False,
            compute_convergence_checks=False,
        )
    seconds = time.perf_counter() - start
    far = (np.asarray(data.posterior["x"]) > 4).mean(axis=1)
    n_modes = np.asarray(data.sample_stats["n_modes"])[:, -1]
    jumps = np.asarray(data.sample_stats["jump_acceptance"])
    jumps = jumps[np.isfinite(jumps)]  # NaN where no jump was proposed
    return {
        "options": label,
        "modes in map": f"{n_modes.min()}-{n_modes.max()}",
        "far, chains": f"{far.min():.2f}-{far.max():.2f}",
        "far, pooled": far.mean(),
        "jump acc.": jumps.mean() if jumps.size else np.nan,
        "R-hat": float(az.rhat(data)["x"]),
        "seconds": seconds,
    }


rows = [
    run("defaults"),
    run("particles = 16", particles=16),
    run("center 4 for every particle", center={"x": 4.0}),
    run("mode_jumps = False", mode_jumps=False),
]
table = pd.DataFrame(rows).set_index("options")
print(f"exact weight of the far mode: {TRUE_FAR_WEIGHT}; {CHAINS} chains per run")
show(table.round(2))

# %% [markdown]
# With jumps, each chain's share of the far mode is an estimate of its weight by itself, and
# the chains agree (R-hat near 1). Without them (`mode_jumps=False`), a chain stays in the mode
# it started in: the chains start from particles drawn by the estimated weights, so the share of
# *chains* in each mode is still roughly right, but each chain's own share is 0 or 1 and R-hat
# says so. A smaller population is cheaper (the population's gradients are counted in the first
# tuning iteration's `n_steps`) and estimates the weights more roughly, which only makes jumps
# less often accepted; one that misses a mode altogether leaves it to the Langevin steps. When
# the chains' maps disagree, `check_mode_maps` (run by `compare_with_nuts`) warns.
#
# The center is named as `initvals` are, by the model's variables in their own space
# (`{"sigma": 1.0}` for a positive `sigma`), or by value variables in **unconstrained** space
# (`{"sigma_log__": 0.0}`), or given as a raveled unconstrained array; an unknown name or a value
# outside a variable's support raises a `ValueError` listing what is allowed. `lambda_min` sets
# how close to a Dirac the path starts, `n_levels` how gently it opens; with too few levels the
# contraction between levels is large and the acceptance drops at the start of each level.

# %% [markdown]
# ## Step size and `target_accept`
#
# The step size adapts by dual averaging towards `target_accept` (default 0.8 for the HMC
# kernel, as PyMC's NUTS; 0.6 with `kernel="mala"`, the usual optimum for MALA). The step is in
# the coordinates that whiten the preconditioner, so a good one is of order 1. The tuning
# iterations' sample stats show what happened (`jump_acceptance` is 1 or 0 for each proposed
# jump, here averaged over 25 iterations):

# %%
with model:
    data = pm.sample(
        draws=DRAWS,
        tune=TUNE,
        chains=4,
        cores=1,
        step=DilationLangevin(tune=TUNE),
        random_seed=3,
        progressbar=False,
        compute_convergence_checks=False,
        discard_tuned_samples=False,
    )
warm = data.warmup_sample_stats
jumps = np.asarray(warm["jump_acceptance"])
window = np.ones(25)
jump_mean = np.array(
    [
        np.convolve(np.nan_to_num(chain), window, "same")
        / np.maximum(np.convolve(np.isfinite(chain), window, "same"), 1)
        for chain in jumps
    ]
)
fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
for ax, key, values in zip(
    axes,
    ("step_size", "acceptance_rate", "jump acceptance\n(mean of 25)"),
    (warm["step_size"], warm["acceptance_rate"], jump_mean),
):
    ax.plot(np.asarray(values).T, lw=0.6)
    ax.set_ylabel(key)
axes[0].set_yscale("log")
axes[1].set_ylim(0, 1)
axes[2].set_ylim(0, 1)
axes[2].set_xlabel("tuning iteration")
fig.suptitle("Tuning of 4 chains: step size, trajectory and jump acceptance rates")
fig.tight_layout()

# %% [markdown]
# The step size moves at the end of each preconditioner window, where the dual averaging
# restarts: from the averaged step it reached, adapting to the new preconditioner within a few
# iterations. `step_size_bar` holds the averaged step that the draws use.
#
# - Raise `target_accept` (0.9–0.95) when `diverging` draws appear; lower it for larger steps
#   when the acceptance is uniform over the posterior.
# - `anneal_metropolis=False` runs unadjusted Langevin during the population's annealing, as in
#   the paper. It moves a little faster but is biased for a finite step; the draws are always
#   Metropolis-adjusted.

# %% [markdown]
# ## `kernel` and `steps_per_draw`
#
# Each iteration of `pm.sample` runs one Hamiltonian trajectory in one compiled call (underdamped
# Langevin dynamics, Metropolis-adjusted per trajectory): while tuning, the chain measures after
# how many leapfrog steps its trajectories turn back (NUTS's U-turn), and each draw's length is
# one of those, times a uniform factor on [0.25, 1], so a draw costs as many gradients as the
# posterior's geometry asks (`n_steps` in `sample_stats`; `trajectory_length="chees"` adapts one
# length by the ChEES criterion instead). `kernel="mala"` runs `steps_per_draw` MALA steps
# instead (8 by default): a run of `L` MALA steps moves like a diffusion, about `√L` step
# lengths, where a trajectory of `L` leapfrog steps moves about `L`, and MALA's step must shrink
# faster with the dimension, so MALA suits small models only (a 200-dimensional regression:
# min ESS 2 with MALA, 1077–1580 with HMC). With the HMC kernel, `steps_per_draw` fixes the
# mean number of leapfrog steps instead of adapting the length. On a unimodal model, here a
# 10-dimensional normal with scales from 0.1 to 10:

# %%
with pm.Model() as scales_model:
    pm.Normal("theta", 0.0, np.geomspace(0.1, 10.0, 10), shape=10)


def ess_per_second(step=None, **kwargs):
    with scales_model:
        data = pm.sample(
            draws=DRAWS,
            tune=TUNE,
            chains=2,
            cores=1,
            step=step() if step else None,
            random_seed=5,
            progressbar=False,
            compute_convergence_checks=False,
            **kwargs,
        )
    seconds = float(data.posterior.attrs["sampling_time"])  # compilation excluded
    ess = az.ess(np.asarray(data.posterior["theta"])[..., 0], method="bulk")
    for i in range(1, 10):
        ess = min(ess, az.ess(np.asarray(data.posterior["theta"])[..., i], method="bulk"))
    return {"min bulk ESS": float(ess), "seconds": seconds, "ESS/s": float(ess) / seconds}


rows = {
    "DilationLangevin (HMC, U-turn lengths)": ess_per_second(lambda: DilationLangevin(tune=TUNE)),
    "DilationLangevin, kernel='mala'": ess_per_second(
        lambda: DilationLangevin(tune=TUNE, kernel="mala")
    ),
}
rows["NUTS (PyMC)"] = ess_per_second(nuts_sampler="pymc")
show(pd.DataFrame(rows).T.round(1))

# %% [markdown]
# (`seconds` is PyMC's `sampling_time`, compilation excluded. These runs are short, so the
# numbers are noisy; the benchmarks page has careful timings.)
#
# **`trajectory_length`.** The U-turn lengths (default) are those of the posterior as a whole.
# A model whose few scale parameters mix more slowly than its many other coordinates can need
# longer trajectories than that: on the benchmarks the gallery's radon model (`sigma_b`, the
# slopes' group sd) and a Gaussian process's hyperparameters (gp_pois_regr) had half to a third
# of the effective draws they get with `trajectory_length="chees"`, which adapts one length to
# the slowest second moments (at 2-8 times the gradients on most hierarchies). If `az.ess` is
# low for a scale parameter while the others are high, try it.
#
# **`precondition` and `max_rank`.** The default preconditioner is the diagonal plus the
# directions in which the draws and gradients (or, before the first window, the curvature at
# the mode) show a variance off by more than a factor 2, as nutpie's low-rank adaptation. Each
# such direction costs `O(d)` per leapfrog step. At the end of the first window the chain
# checks the curvature's directions against the window's draws and gradients (for a Gaussian
# they agree exactly); where the median direction is off by more than a factor 2 (hierarchies,
# latent time series: 5-8 on the benchmarks) and the model has more than 64 parameters, it
# keeps at most the 16 directions furthest off from then on: on hierarchies of 100-500 groups
# and stochastic volatility that gave 1.0-1.8 times the effective draws per second of keeping
# them all, on radon 0.85-1.05. Where the curvature holds (the Gaussian regressions, kidiq,
# arK, garch) there is no cap. `max_rank` sets a cap yourself, applied from the start to the
# curvature's directions too: `max_rank=16` gave about 1.5 times the default's effective draws
# per second on 500-group hierarchies (1005 parameters), but on stochastic volatility of 500
# returns, whose most extreme curvature directions are the most wrong, 0.35-0.6 of them; on
# regressions with correlated designs, whose directions are all needed, it cost 60-80 %.

# %% [markdown]
# ## `sample_dilation`: levels, steps and refinement
#
# The population sampler gives every particle its own dilation path, from its own center (prior
# draws and an overdispersed cloud), `n_levels` levels of `steps_per_level` Langevin steps. It
# then maps the modes the particles reached (`n_modes_found` in `sample_stats`, the table from
# `pymc_dilation.mode_table`), estimates their weights by importance sampling, resamples the
# particles to those weights and runs `refine_sweeps` exact sweeps at λ = 1, each
# `refine_steps` MALA steps and one independence jump between the modes. A mode that no
# particle's path reached stays empty. Passing a `center` starts every particle from that one
# point instead, the way the first release worked:

# %%
rows = {}
for label, center in (("center x = 0 (default)", None), ("center x = 4", {"x": 4.0})):
    with model:
        population = sample_dilation(PARTICLES, random_seed=1, progressbar=False, center=center)
    stats = population.sample_stats
    rows[f"sample_dilation, {label}"] = {
        "far share": float((np.asarray(population.posterior["x"]) > 4).mean()),
        "modes found": stats.attrs["n_modes_found"][0],
        "gradients per particle": stats.attrs["n_grad"],
        "seconds": stats.attrs["sampling_time"],
    }
with model:
    start = time.perf_counter()
    smc = pm.sample_smc(
        PARTICLES, chains=1, random_seed=1, progressbar=False, compute_convergence_checks=False
    )
    rows["pm.sample_smc"] = {
        "far share": float((np.asarray(smc.posterior["x"]) > 4).mean()),
        "seconds": time.perf_counter() - start,
    }
print(f"exact weight of the far mode: {TRUE_FAR_WEIGHT}")
show(pd.DataFrame(rows).T)

# %% [markdown]
# The attribute `n_grad` of `sample_stats` is the number of gradient evaluations per particle:
# the annealing (`n_levels` levels of `steps_per_level` steps), mapping the modes, the
# importance draws, and the refinement (`refine_sweeps` sweeps of `refine_steps` steps and one
# jump). More `refine_sweeps` let the exact moves correct more of what the estimates got wrong.
#
# ## Funnels: centered hierarchies are reparameterized for you
#
# A hierarchy written centered, `theta ~ Normal(mu, tau)`, is a funnel: as `tau` shrinks the
# posterior of `theta` narrows without bound, and no step size fits both ends (PyMC's NUTS
# diverges there). Both samplers find such variables in the model's graph (a `Normal`,
# `StudentT`, `Cauchy`, `Laplace`, `Logistic`, `Gumbel` or `LogNormal` whose scale is another
# sampled variable, an `MvNormal` whose covariance is, or a `GaussianRandomWalk` whose step sd
# is, as in stochastic volatility: its increments) and sample each of their scalars in
# the coordinates that suit it: non-centered (`theta = mu + tau * z`) where the data say
# little about it, as written where
# the data pin it down (data nine times as precise as the prior at the hierarchy's typical
# scale; see `pymc_dilation.reparam`). The change of variables is exact, the draws come back
# as you declared them (same names, dims and coords; `pm.sample_posterior_predictive` works
# on them), `DilationLangevin.centering` and `sample_stats.attrs["centering"]` say what was
# done (0: non-centered, 1: as written), and PyMC's log says it at the start.
# `reparameterize=False` samples the model as written.

# %%
with pm.Model() as eight_schools:
    mu8 = pm.Normal("mu", 0.0, 5.0)
    tau8 = pm.HalfCauchy("tau", 5.0)
    theta8 = pm.Normal("theta", mu8, tau8, shape=8)
    pm.Normal(
        "y", theta8, [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
        observed=[28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    )  # fmt: skip
rows = {}
with eight_schools:
    for label, reparameterize in (("default", True), ("reparameterize=False", False)):
        step = DilationLangevin(reparameterize=reparameterize)
        trace = pm.sample(
            step=step, tune=TUNE, draws=DRAWS, chains=4, cores=1, random_seed=1,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
        rows[f"DilationLangevin, {label}"] = {
            "tau mean": float(trace.posterior["tau"].mean()),
            "tau sd": float(trace.posterior["tau"].std()),
            "divergences": int(trace.sample_stats["diverging"].sum()),
            "R-hat tau": float(az.rhat(trace)["tau"]),
            "centering": step.centering,
        }
    population = sample_dilation(PARTICLES, random_seed=1, progressbar=False)
    rows["sample_dilation, default"] = {
        "tau mean": float(population.posterior["tau"].mean()),
        "tau sd": float(population.posterior["tau"].std()),
        "centering": population.sample_stats.attrs["centering"],
    }
print("reference (posteriordb): tau 3.60 ± 3.20")
show(pd.DataFrame(rows).T)

# %% [markdown]
# What is not done for you, and what you can do by hand:
#
# - **Multivariate latent fields**: a single `pm.MvNormal` vector whose covariance depends on
#   sampled hyperparameters (a GP written by hand) is handled, as `f = mu + cholesky(K) @ z`
#   where the data are weak; batched `MvNormal`s, `MvStudentT` and other multivariate
#   families are left as written (`pm.gp.Latent` already samples its field non-centered).
# - **Hierarchies built from deterministics** (`theta = mu + tau * z` written by you) are
#   already non-centered and are left alone; so are scales that a companion step method of a
#   `CompoundStep` samples.
# - **The choice per scalar** is made once, before sampling, at the Laplace approximation of
#   the hyperparameters' marginal. Where the posterior of a scale spans orders of magnitude
#   and some groups have strong data, compare with `reparameterize=False` or write the model
#   the way you want it sampled.
# - **`sample_dilation` in high dimension**: where one importance step from the map cannot be
#   trusted (weakly identified hierarchies of 20–200 groups, radon, stochastic volatility) it
#   carries the particles from the map to the posterior by sequential Monte Carlo, again from
#   their own moments until two runs agree on the evidence; measured within 0.1 sd there, but
#   slower than `pm.sample_smc` (a 205-parameter hierarchy: 13.6 s against 6.4 s, where SMC
#   was 2.6 sd off). A latent GP's length scale, whose tail is its prior's, can come out with
#   its sd 13–39 % short and no warning (a held-out 40-point GP): compare with
#   `DilationLangevin` there.

# %% [markdown]
# ## Label switching and sign flips: symmetries are sampled for you
#
# A mixture whose components are exchangeable (same prior for each component's weight, mean
# and scale) has `K!` copies of every mode, one per order of the labels; a factor model's
# loadings and factors can flip sign together; `theta` in `y ~ Normal(theta**2, s)` can too.
# No gradient crosses between such copies, and a map that holds some of them gives each
# chain its own share of orders. Both samplers look for these symmetries before sampling:
# variables that share an axis (permuting its labels) and real-valued variables (flipping
# signs, by label, alone or in pairs), each candidate kept only if it leaves the compiled
# log density unchanged at prior draws (`pymc_dilation.symmetry`). Every reported draw is then
# the chain's state under a uniformly drawn symmetry, after an exact Metropolis–Hastings test
# (Frühwirth-Schnatter's random permutation sampler); the chain itself stays in its copy, so
# its preconditioner keeps fitting it. `sample_dilation` moves its particles the same way and
# counts each mode's copies in `log_marginal_likelihood`. `DilationLangevin.symmetries` and
# `sample_stats.attrs["symmetries"]` say what was found; `symmetry_jumps=False` turns it off.
#
# A map that is a symmetry only approximately (a symmetric likelihood under a prior that is
# not) does not make copies: its mirror mode has another weight. Such *near* symmetries only
# choose where half of the tuning paths start (mirrored), so that the map finds the mirrored
# mode and weighs it.
#
# Four exchangeable components (24 orders of the means, each holding 1/24 of the mass): how
# many orders each chain's draws visit, and the largest error of a chain's share of an order:

# %%
centers = (-6.0, -2.0, 2.0, 6.0)
mixture_data = np.concatenate(
    [np.random.default_rng(c).normal(loc, 0.7, 60) for c, loc in enumerate(centers)]
)
with pm.Model() as mixture:
    mu_m = pm.Normal("mu", 0.0, 10.0, shape=4)
    sigma_m = pm.HalfNormal("sigma", 2.0, shape=4)
    w_m = pm.Dirichlet("w", np.ones(4))
    pm.NormalMixture("y", w=w_m, mu=mu_m, sigma=sigma_m, observed=mixture_data)
orders = list(itertools.permutations(range(4)))
order_rows = {}
with mixture:
    for label, jumps in (("default", True), ("symmetry_jumps=False", False)):
        step = DilationLangevin(symmetry_jumps=jumps)
        trace = pm.sample(
            step=step, tune=TUNE, draws=DRAWS, chains=4, cores=1, random_seed=2,
            progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
        ranks = np.argsort(np.argsort(np.asarray(trace.posterior["mu"]), axis=-1), axis=-1)
        for chain, chain_ranks in enumerate(ranks):
            shares = np.array([np.all(chain_ranks == o, axis=1).mean() for o in orders])
            order_rows[(label, f"chain {chain}")] = {
                "orders visited": int((shares > 0).sum()),
                "largest share error": float(np.abs(shares - 1 / 24).max()),
                "symmetries found": step.symmetries,
            }
show(pd.DataFrame(order_rows).T)

# %% [markdown]
# ## When to use something else
#
# Be pragmatic:
#
# - **Unimodal posteriors** (most regression and hierarchical models): NUTS is the default for
#   good reasons, and [nutpie](https://github.com/pymc-devs/nutpie) is the fast way to run it
#   (`pm.sample(nuts_sampler="nutpie")`). `DilationLangevin` can be faster per effective draw on
#   small models, because a whole trajectory runs in one compiled call (see the benchmarks).
#   Try it with `compare_with_nuts` and keep whichever is better on your model.
# - **Multimodal posteriors where the mode weights matter**: chains of NUTS, or of any sampler
#   that stays in the mode it reaches, give mode weights only as a share of chains.
#   `DilationLangevin` chains jump between the modes of their maps (check with
#   `mode_occupancy` that every chain visits the same modes in the same shares). For the
#   weights themselves with standard errors, and the evidence, use a population sampler:
#   `sample_dilation` matched or beat `pm.sample_smc`'s mode weights on the randomized
#   benchmark mixtures and model families (see the benchmarks), and reports each mode's weight
#   with a standard error (`mode_table`). Both miss modes whose basin no search reaches:
#   narrow modes next to wider ones, whose small basins no broad law of starting points
#   lands in. Where three modes or more are found, both samplers also climb from points
#   spread over them, which finds most such modes in 10 dimensions; in 20 and 50 dimensions
#   the search often finds one or two modes and stops there, silently (`pm.sample_smc` misses
#   them as well). Read the warnings: they say when the importance weights behind the
#   weights and the evidence are unreliable, or when chains disagree on the modes.
# - **Funnels the reparameterization does not reach** (a field already written non-centered
#   whose data are strong, `gp_pois_regr` in the benchmarks): `sample_dilation` bridges to
#   them (`gp_pois_regr` within 0.08 sd). Neal's funnel written as such, or a centered
#   hierarchy sampled with `reparameterize=False`, is still wrong there, and warned (its
#   convergence checks, or bridges that disagree on the evidence, below).
# - **Products of independent factors** (each with several modes: `2^k` modes for k double
#   wells): `sample_dilation` finds the factors (up to 64 parameters) and samples them one by
#   one, so their modes need not be enumerated (`sample_stats.attrs["factors"]`);
#   `DilationLangevin` chains jump in each such factor at every iteration
#   (`factor_jump_acceptance` in `sample_stats`).
# - **Modes the tuning population does not reach**: a `DilationLangevin` chain jumps only to
#   modes of its map. Compare the chains' maps (`mode_occupancy`, `check_mode_maps`), raise
#   `particles`, and compare with `sample_dilation` when a mode may be missing.
# - **Discrete variables**: `DilationLangevin` samples the continuous ones inside a
#   `CompoundStep` with PyMC's samplers for the discrete ones; `sample_dilation` needs a model
#   with continuous variables only.

# %% [markdown]
# ## Which posteriors each sampler is not for
#
# **`sample_dilation` is not for:**
#
# - **Funnels sampled as written** (`reparameterize=False`, or Neal's funnel through
#   `sample_logdensity`): the bridges from the neck's Gaussian do not reach the mouth, and
#   the funnel's scale comes out low. It warns (below). Keep the reparameterization, write
#   the field non-centered, or use `pm.sample` (NUTS or `DilationLangevin`).
# - **Speed on weakly identified hierarchies with many groups**: right (within 0.1 sd on
#   20–200 groups) but slower than `pm.sample_smc` (see the benchmarks).
# - **Narrow modes beside wide ones from 20 dimensions on**: a mode that no search reaches is
#   missing, without a warning (seen in the 20- and 50-dimensional benchmark mixtures, where
#   `pm.sample_smc` misses them too). Run it with more `chains` and compare them (they warn
#   when they disagree on the modes), and compare with `DilationLangevin`'s chains.
# - **Discrete variables**: refused; marginalise them (`pymc_extras.marginalize`), or use
#   `pm.sample` with `DilationLangevin` for the continuous ones in a `CompoundStep`.
# - **Improper posteriors** (`pm.Flat` priors that the data do not identify): refused with a
#   `ValueError` naming the direction along which the density does not fall; give proper
#   priors.
#
# **`DilationLangevin` is not for:**
#
# - **Funnels it cannot reparameterize**: no constant preconditioner fits a funnel's neck and
#   mouth (`gp_pois_regr`'s scale parameters mix slowly; where the optimum is the neck, as in
#   a centered random walk's scale, chains stay there). Write those parts non-centered, or use
#   NUTS with a higher `target_accept`.
# - **Mode weights with standard errors and the evidence**: its chains visit the modes of their
#   maps in proportion to their mass (check with `mode_occupancy`), but the map's own weights
#   are an importance-sampling estimate that degenerates in high dimension. Use
#   `sample_dilation` for weights and evidence.
# - **Discrete variables** on their own: it samples continuous variables; PyMC's samplers take
#   the discrete ones in a `CompoundStep`.
#
# `sample_dilation` checks its own result: besides the Pareto k̂ of the importance weights, the
# refined particles must satisfy the Stein identity of the posterior (the gradients average
# to zero, and `E[(x − x̄) ∇log p(x)ᵀ] = −I`), the two halves of the particles must agree
# (`subpopulation_rhat`), the particles read in order must be worth at least 40 % of their
# number in independent draws (`particle_ess`: copies made by the resampling must have
# drifted apart), and few particles may be stuck or never move during the refinement. The
# figures are in `sample_stats` (`stein_mean_z`, `stein_cov_z`, `subpopulation_rhat`,
# `particle_ess`, `stuck_share`, `unmoved_share`); a failed check raises an
# `UnreliableResultWarning` that says what to do. On centered eight schools sampled as
# written (`reparameterize=False`):

# %%
with eight_schools, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", UnreliableResultWarning)
    funnel = sample_dilation(PARTICLES, random_seed=1, progressbar=False, reparameterize=False)
checks = ["stein_mean_z", "stein_cov_z", "subpopulation_rhat", "particle_ess", "stuck_share"]
show(pd.DataFrame({name: np.asarray(funnel.sample_stats[name]) for name in checks}).round(3))
print(f"tau: mean {float(funnel.posterior['tau'].mean()):.3g} (reference 3.60 ± 3.20)")
for w in caught:
    if issubclass(w.category, UnreliableResultWarning):
        print("UnreliableResultWarning:", w.message)
