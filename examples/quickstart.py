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
import pymc as pm

from pymc_dilation import DilationLangevin, sample_dilation

FAST = os.environ.get("PYMC_DILATION_FAST") == "1" or "--fast" in sys.argv[1:]
PROGRESS = sys.stdout.isatty()  # progress bars in a terminal, not in the rendered docs
DRAWS, CHAINS = (200, 8) if FAST else (1000, 16)

# %% [markdown]
# ## A posterior with two modes
#
# A scalar with a wide normal prior and a likelihood with two bumps, at −2 and +10. The modes
# are 12 standard deviations apart: a gradient-based chain that starts in one never visits the
# other.

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
# `DilationLangevin` is an ordinary PyMC step method. `cores=1` runs the chains one after the
# other (the model is compiled with Numba once, when the step is built).
# `discard_tuned_samples=False` keeps the warm-up, where the annealing happens.

# %%
with model:
    dilation = pm.sample(
        draws=DRAWS,
        chains=CHAINS,
        cores=1,
        step=DilationLangevin(),
        random_seed=1,
        progressbar=PROGRESS,
        compute_convergence_checks=False,
        discard_tuned_samples=False,
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
# Each MCMC chain ends up in one mode, so the share of chains in a mode is at best a rough
# estimate of its weight. `DilationLangevin` starts every chain at the center of the path (the
# model's initial point, here 0) and walks it out into the posterior while λ rises to 1; then it
# tunes the step size at λ = 1. From a center on one mode's side, the chains follow the
# gradient into that mode and stay there (crossing between modes inside `pm.sample` is still
# open work); a `center` between the modes sends them both ways. The cell below counts the
# chains in the far mode at both moments. NUTS chains start near 0 and fall into whichever mode
# is downhill.
#
# `sample_dilation` sends every particle along its own dilation path, maps the modes they reach
# (the attribute `n_modes_found`, the table from `pymc_dilation.mode_table`), weighs them by
# importance sampling and moves the particles between them with exact jumps, so its share of
# particles in each mode estimates the weights, here with the far mode found although the
# initial point (0) is on the near mode's side. The [mode-map tutorial](mode_map) reads the
# map, the weights' standard errors and the evidence.

# %%
warm_x = np.asarray(dilation.warmup_posterior["x"])
lam = np.asarray(dilation.warmup_sample_stats["dilation"])[0]
end_of_annealing = int(np.argmax(lam >= 1.0))
print(
    f"DilationLangevin: chains in the far mode (x > 4) when λ reaches 1: "
    f"{int((warm_x[:, end_of_annealing] > 4).sum())}/{CHAINS}, "
    f"at the end of tuning: {int((warm_x[:, -1] > 4).sum())}/{CHAINS}"
)
for label, data in (("DilationLangevin", dilation), ("NUTS", nuts)):
    far = (np.asarray(data.posterior["x"]) > 4.0).mean(axis=1)
    print(f"{label}: chains with most draws in the far mode: {int((far > 0.5).sum())}/{CHAINS}")
far_share = float((np.asarray(population.posterior["x"]) > 4.0).mean())
n_modes = population.sample_stats.attrs["n_modes_found"]
print(f"sample_dilation: modes found {n_modes}, share of particles in the far mode {far_share:.2f}")
print(f"exact weight of the far mode: {true_weights[1]:.2f}")

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
# ## Summary and sample stats
#
# The usual ArviZ tools work on the result. With chains in different modes, R-hat is far above
# 1 and the ESS is small: that is the honest verdict on a multimodal posterior sampled by
# independent chains.

# %%
print(az.summary(dilation, var_names=["x"]))

# %% [markdown]
# `sample_stats` carries `dilation` (λ), `step_size`, `acceptance_rate`, `diverging`, `lp` and
# `n_steps`, named as for NUTS. The draws are taken at λ = 1; pass
# `discard_tuned_samples=False` to `pm.sample` to see the annealing in `warmup_sample_stats`
# (the demo, `python -m pymc_dilation demo`, plots it).

# %%
stats = dilation.sample_stats
print("variables:", sorted(stats.data_vars))
print("mean acceptance rate:", round(float(np.asarray(stats["acceptance_rate"]).mean()), 3))
print("step size per chain:", np.asarray(stats["step_size"])[:, -1].round(3))
