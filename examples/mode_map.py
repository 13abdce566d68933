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
# # The mode map: every mode found, weighed, and how sure that is
#
# `sample_dilation` does not stop at draws. It maps the modes its particles reached, estimates
# the posterior mass of each with a Monte Carlo error, reports the model's evidence (log
# marginal likelihood, as `pm.sample_smc` does) and warns when it cannot vouch for those
# numbers. This tutorial reads all of it on two posteriors NUTS cannot mix across:
#
# 1. a regression whose likelihood sees only `|b|`, so `b` has two modes of unequal mass;
# 2. a 2-D mixture of 30 Gaussians of different widths at random places, none symmetric about
#    the initial point.
#
# Run it as a script: `python examples/mode_map.py` (set `PYMC_DILATION_FAST=1` for a small run).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import pymc as pm

from pymc_dilation import mode_table, plot_modes, sample_dilation

FAST = os.environ.get("PYMC_DILATION_FAST") == "1"
PARTICLES = 1000 if FAST else 2000

# %% [markdown]
# ## A sign-ambiguous regression
#
# `y ~ N(|b| x, 1)` with the prior `b ~ N(0.3, 2)`: the data say `|b| ≈ 1.3`, and the prior
# (centered right of 0) makes the positive mode a little heavier. With one parameter the exact
# answer is a quadrature away.

# %%
rng = np.random.default_rng(11)
x = rng.normal(size=40)
y = 1.3 * x + rng.normal(size=40)

with pm.Model() as sign_model:
    b = pm.Normal("b", 0.3, 2.0)
    pm.Normal("y", pm.math.abs(b) * x, 1.0, observed=y)
    idata = sample_dilation(PARTICLES, chains=2, random_seed=1, progressbar=False)

grid = np.linspace(-6, 6, 24001)
log_post = -0.5 * ((grid - 0.3) / 2) ** 2 - 0.5 * ((y - np.abs(grid)[:, None] * x) ** 2).sum(1)
post = np.exp(log_post - log_post.max())
exact_positive = post[grid > 0].sum() / post.sum()
print(f"P(b > 0): exact {exact_positive:.3f}, "
      f"sample_dilation {float((np.asarray(idata.posterior['b']) > 0).mean()):.3f}")  # fmt: skip

# %% [markdown]
# `mode_table` has one row per chain and mode: the estimated weight (the mode's posterior mass,
# by importance sampling against the mode's local Gaussian) with its standard error, how many
# of the final particles sit in the mode, the log density at its peak, and its location in the
# unconstrained space the sampler works in.

# %%
print(mode_table(idata).round(3))

# %% [markdown]
# The evidence comes with it, one value per chain, under the name `pm.sample_smc` uses; its
# standard error is an attribute. Here it is exact up to a normal integral, so we can check:

# %%
lml = idata.sample_stats["log_marginal_likelihood"]
step = grid[1] - grid[0]
log_norm = -0.5 * np.log(2 * np.pi * 4.0) - 0.5 * len(y) * np.log(2 * np.pi)
exact_lml = np.log(np.exp(log_post).sum() * step) + log_norm
print("log marginal likelihood per chain:", np.asarray(lml).round(3))
print("standard errors:", np.round(lml.attrs["standard_error"], 3), f"exact: {exact_lml:.3f}")

# %% [markdown]
# `plot_modes` splits each marginal by mode: which mode puts mass where.

# %%
plot_modes(idata)
plt.show()

# %% [markdown]
# ## Thirty modes at random places, of different widths
#
# A prior `N(0, 10²)` times a mixture of 30 Gaussians with random weights, scales 0.5 to 2
# (four times apart) and centers anywhere in `[-30, 30]²`. The initial point (0, 0) is not
# between the modes in any useful sense, and the gradient there points at whichever mode is
# steepest. Every particle of `sample_dilation` follows the dilation path from its own center
# (prior draws and a cloud about the mode found first), so the paths end in every basin that
# holds a center.

# %%
mix_rng = np.random.default_rng(2026)
K = 30
means = mix_rng.uniform(-30, 30, size=(K, 2))
scales = np.exp(mix_rng.uniform(np.log(0.5), np.log(2.0), size=K))
weights = mix_rng.dirichlet(np.ones(K))

with pm.Model() as mixture_model:
    z = pm.Normal("z", 0.0, 10.0, shape=2)
    sq = pm.math.sum((z[None, :] - means) ** 2, axis=1)
    pm.Potential(
        "mixture",
        pm.math.logsumexp(np.log(weights) - np.log(2 * np.pi * scales**2) - 0.5 * sq / scales**2),
    )
    mixture = sample_dilation(PARTICLES, random_seed=2, progressbar=False)

# Exact posterior draws: the posterior is again a Gaussian mixture (prior times components).
var = 100.0 + scales**2
mass = weights * np.exp(-0.5 * (means**2).sum(1) / var) / (2 * np.pi * var)
post_sd = np.sqrt(1 / (1 / scales**2 + 1 / 100.0))
k = mix_rng.choice(K, size=200_000, p=mass / mass.sum())
exact_draws = means[k] * (100 / var[k])[:, None] + post_sd[k, None] * mix_rng.normal(
    size=(len(k), 2)
)

found = mode_table(mixture).loc[0]
places = found[["z[0]", "z[1]"]].to_numpy()
nearest = np.argmin(((exact_draws[:, None, :] - places[None]) ** 2).sum(-1), axis=1)
found = found.assign(exact=np.bincount(nearest, minlength=len(found)) / len(nearest))
print(f"modes found: {len(found)}")
print(found[["weight", "weight_se", "exact", "share", "z[0]", "z[1]"]].head(10).round(3))

# %% [markdown]
# `exact` is the share of exact posterior draws nearest to each mode found (components close
# enough to have no barrier between them form one mode, and their masses add up). The
# estimated weights agree with it within a few standard errors, and the particles' shares
# (`share`) follow the weights, because the final population was resampled to them and refined
# by exact moves.
#
# ## When not to trust the numbers
#
# Three checks run on every result, and each failed check is a `UserWarning`:
#
# - the Pareto k̂ of the importance weights behind the weights and the evidence (`pareto_k` in
#   `sample_stats`; above 0.7 the estimates are unreliable: a mode far from Gaussian, a funnel);
# - whether the particles' final shares agree with the estimated weights;
# - with several chains, whether the chains found the same modes with the same weights.
#
# The figures behind them are in `sample_stats`:

# %%
stats = mixture.sample_stats
print("pareto_k:", np.asarray(stats["pareto_k"]).round(2),
      "importance ESS:", np.asarray(stats["importance_ess"]).round(0))  # fmt: skip

# %% [markdown]
# What the sampler cannot promise: a mode whose basin holds no particle's center is missed,
# by this sampler as by `pm.sample_smc`. In high dimensions a narrow mode close to a mode four
# times wider lies inside the wide mode's typical set and has a tiny basin; the randomized
# benchmark (`benchmarks/RESULTS.md`) shows both samplers missing such modes in 50-D, and
# `log_marginal_likelihood` then misses their mass too.
