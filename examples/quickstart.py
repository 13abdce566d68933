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
# # Quick start
#
# `DilationLangevin` on a posterior with two modes, beside PyMC's NUTS and the population
# sampler `sample_dilation`.
#
# This page is the script `examples/quickstart.py`, run when the documentation is built. Run it
# yourself with `python examples/quickstart.py` (add `--fast`, or set `PYMC_DILATION_FAST=1`, for
# a smaller run).

# %%
import os
import sys

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm

from pymc_dilation import (
    DilationLangevin,
    check_mode_maps,
    mode_occupancy,
    plot_mode_occupancy,
    sample_dilation,
)

FAST = os.environ.get("PYMC_DILATION_FAST") == "1" or "--fast" in sys.argv[1:]
PROGRESS = sys.stdout.isatty()  # progress bars in a terminal, not in the rendered docs
DRAWS, CHAINS = (200, 8) if FAST else (1000, 8)

# %% [markdown]
# ## A posterior with two modes
#
# A scalar with a wide normal prior and a likelihood with two bumps, at −2 and +10. The modes
# are 12 standard deviations apart: a gradient-based chain that starts in one never visits the
# other by its own steps.

# %%
with pm.Model() as model:
    x = pm.Normal("x", 0.0, 10.0)
    modes = pm.math.stack(
        [pm.logp(pm.Normal.dist(-2.0, 1.0), x), pm.logp(pm.Normal.dist(10.0, 1.0), x)]
    )
    pm.Potential("two_modes", pm.math.logsumexp(modes) + np.log(0.5))

# %% [markdown]
# The exact posterior is a mixture of two normals. The prior N(0, 10²) favours the mode nearer 0,
# so the mode at +10 holds about 38 % of the mass:

# %%
shrink = 100.0 / 101.0  # prior variance / (prior variance + 1)
means = shrink * np.array([-2.0, 10.0])
log_w = -0.5 * np.array([-2.0, 10.0]) ** 2 / 101.0
true_weights = np.exp(log_w - np.logaddexp.reduce(log_w))
print("true mode weights (−2, +10):", true_weights.round(3))


def true_density(grid):
    return sum(
        w * np.exp(-0.5 * (grid - m) ** 2 / shrink) / np.sqrt(2 * np.pi * shrink)
        for w, m in zip(true_weights, means)
    )


# %% [markdown]
# ## Sampling
#
# `DilationLangevin` is an ordinary PyMC step method. At the first tuning iteration each chain
# sends a small population of particles (`particles`) along the dilation path, each from its own
# center (prior draws, and a cloud about the mode nearest the chain's start), maps the modes they
# reach, gives each a local Gaussian and estimates its weight by importance sampling; the chain
# starts from a particle drawn by those weights. Every iteration then takes `steps_per_draw`
# Metropolis-adjusted Langevin steps within a mode and proposes a jump from the mixture of the
# modes' Gaussians, accepted or rejected by an exact Metropolis–Hastings ratio. So a single
# chain moves between the modes, and its draws are exact whatever the map found.
#
# `cores=1` runs the chains one after the other (the model is compiled with Numba once, when the
# step is built).

# %%
with model:
    step = DilationLangevin()
    dilation = pm.sample(
        draws=DRAWS,
        chains=CHAINS,
        cores=1,
        step=step,
        random_seed=1,
        progressbar=PROGRESS,
        compute_convergence_checks=False,
    )
    nuts = pm.sample(
        draws=DRAWS,
        chains=CHAINS,
        cores=1,
        random_seed=1,
        nuts_sampler="pymc",
        progressbar=PROGRESS,
        compute_convergence_checks=False,
    )
    population = sample_dilation(500 if FAST else 2000, random_seed=1, progressbar=PROGRESS)

# %% [markdown]
# ## Where the draws went
#
# Each chain's share of draws in the far mode (x > 4), against the exact weight, with R-hat and
# the bulk effective sample size over all chains:

# %%
shares = pd.DataFrame(
    {
        label: (np.asarray(data.posterior["x"]) > 4.0).mean(axis=1)
        for label, data in (("DilationLangevin", dilation), ("NUTS", nuts))
    }
).rename_axis("chain")
print(f"share of draws in the far mode, per chain (exact weight {true_weights[1]:.3f}):")
print(shares.T.round(2).to_string())
print()
for label, data in (("DilationLangevin", dilation), ("NUTS", nuts)):
    pooled = float((np.asarray(data.posterior["x"]) > 4.0).mean())
    rhat = float(az.rhat(data)["x"])
    ess = float(az.ess(data, method="bulk")["x"])
    print(f"{label:>16}: pooled far share {pooled:.3f}, R-hat {rhat:.3f}, bulk ESS {ess:.0f}")

# %% [markdown]
# Every `DilationLangevin` chain visits both modes, each in about the exact proportion, so
# R-hat is near 1 because the chains agree on the right answer. NUTS chains start near 0 and
# fall into the mode downhill from there, and never leave it: each chain's share is 0 or 1.
# When they split between the modes, R-hat is far above 1; when they all fall into the same
# mode (the near one, from this start), R-hat is near 1 too and the far mode is simply missing:
# R-hat compares chains with each other, and chains that agree on a wrong answer pass it.
#
# `plot_mode_occupancy` shows the mode of every draw, chain by chain (left), and each chain's
# share of each mode (right). Modes are numbered by location, so mode 1 is the far one:

# %%
axes = plot_mode_occupancy(dilation)

# %% [markdown]
# `mode_occupancy` gives the same as a table, one row per chain and mode: the share of the
# chain's draws in the mode, the mode's weight as the chain's tuning population estimated it,
# and the chain's acceptance rate of the jumps. The shares, not the estimated weights, are the
# posterior: the estimates only shape the jump proposals, and the Metropolis–Hastings ratio
# corrects for them. `check_mode_maps` warns when chains found different modes or disagree on
# their shares (`compare_with_nuts` runs it); here it finds nothing:

# %%
print(mode_occupancy(dilation).round(3).head(6).to_string())
print("check_mode_maps:", check_mode_maps(dilation))

# %% [markdown]
# The histograms of all draws against the exact density. `sample_dilation` sends every particle
# along its own dilation path, maps the modes they reach (the attribute `n_modes_found`, the table
# from `pymc_dilation.mode_table`), weighs them by importance sampling and moves the particles
# between them with exact jumps; its draws are particles, as `pm.sample_smc`'s are.

# %%
grid = np.linspace(-8, 16, 400)
runs = (("DilationLangevin", dilation), ("NUTS", nuts), ("sample_dilation", population))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
for ax, (label, data) in zip(axes, runs):
    ax.hist(np.asarray(data.posterior["x"]).ravel(), bins=80, range=(-8, 16), density=True)
    ax.plot(grid, true_density(grid), "k", lw=1.5)
    ax.set(title=label, xlabel="x")
axes[0].set_ylabel("density (black: exact)")
fig.tight_layout()

# %% [markdown]
# ## The mode map and the evidence
#
# Each chain keeps its map in the step method's `mode_map` (with `cores=1`, as here, the step
# object holds the last chain's map after `pm.sample` returns): the modes' locations, local
# Gaussians, estimated weights with standard errors and an importance-sampling estimate of the
# log evidence. `sample_dilation` reports its own evidence, one value per chain, under the name
# `pm.sample_smc` uses. Both against the exact value (the model is a mixture of normal integrals):

# %%
sd = np.sqrt(101.0)  # x ~ N(0, 10²) times N(x; m, 1) integrates to N(m; 0, 101)
exact_log_evidence = np.log(0.5) + np.logaddexp.reduce(
    -0.5 * np.array([-2.0, 10.0]) ** 2 / sd**2 - np.log(sd * np.sqrt(2 * np.pi))
)
chain_map = step.mode_map
print("last chain's map: locations", chain_map.locations.ravel().round(2))
print("  weights", chain_map.weights.round(3), "±", chain_map.weights_se.round(3))
print(f"  log evidence {chain_map.log_marginal_likelihood:.3f}")
n_modes = population.sample_stats.attrs["n_modes_found"]
far_share = float((np.asarray(population.posterior["x"]) > 4.0).mean())
lml = float(np.asarray(population.sample_stats["log_marginal_likelihood"]).ravel()[0])
print(f"sample_dilation: modes found {n_modes}, far share {far_share:.3f}, log evidence {lml:.3f}")
print(f"exact: far weight {true_weights[1]:.3f}, log evidence {exact_log_evidence:.3f}")

# %% [markdown]
# The [mode-map tutorial](mode_map) reads `sample_dilation`'s map, the weights' standard errors
# and its warnings.
#
# ## Summary and sample stats
#
# The usual ArviZ tools work on the result:

# %%
print(az.summary(dilation, var_names=["x"]))

# %% [markdown]
# `sample_stats` carries `step_size`, `step_size_bar`, `acceptance_rate` (of the Langevin
# steps), `diverging`, `divergences`, `lp`, `n_steps` (gradient evaluations; the first tuning
# iteration's include the population's) and `perf_counter_diff`, named as for NUTS, and
# `mode_index`, `n_modes`, `mode_weight` and `jump_acceptance` (1 or 0 when a jump was proposed,
# NaN otherwise) for the modes.

# %%
stats = dilation.sample_stats
print("variables:", sorted(stats.data_vars))
print("mean acceptance rate:", round(float(np.asarray(stats["acceptance_rate"]).mean()), 3))
print("mean jump acceptance:", round(float(np.nanmean(np.asarray(stats["jump_acceptance"]))), 3))
print("step size per chain:", np.asarray(stats["step_size"])[:, -1].round(3))
