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
# # A Bayesian workflow with a bimodal posterior
#
# A one-factor model of test scores has a posterior with two mirror-image modes. This tutorial
# goes through the workflow: prior predictive check, sampling with `DilationLangevin` and NUTS
# side by side (`compare_with_nuts`), ArviZ diagnostics, which modes each chain visited
# (`mode_occupancy`, `plot_mode_occupancy`), what to do when the chains disagree, a
# posterior predictive check, and sampling again with the same step after the data change
# (`pm.set_data`).
#
# This page is the script `examples/bayesian_workflow.py`, run when the documentation is built
# (`PYMC_DILATION_FAST=1` for small runs). It runs on PyMC 5 with ArviZ 0.x and on PyMC 6 with
# ArviZ 1.x; the few plotting calls that differ between the two ArviZ versions go through
# helpers in `pymc_dilation._compat`.

# %%
import logging
import os

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pymc as pm

from pymc_dilation import (
    DilationLangevin,
    compare_with_nuts,
    mode_occupancy,
    plot_mode_occupancy,
)
from pymc_dilation._compat import plot_ppc, plot_rank, plot_trace

try:  # rich tables in a notebook, plain text in a terminal
    from IPython.display import display as show
except ImportError:  # pragma: no cover
    show = print

FAST = os.environ.get("PYMC_DILATION_FAST") == "1"
logging.getLogger("pymc").setLevel(logging.ERROR)  # no sampling logs in the page
DRAWS, TUNE, CHAINS = (200, 400, 4) if FAST else (1000, 1000, 4)
SAMPLE_KWARGS = {"cores": 1, "progressbar": False, "compute_convergence_checks": False}
pd.set_option("display.width", 120)
pd.set_option("display.max_columns", 20)
print("PyMC", pm.__version__, "ArviZ", az.__version__)

# %% [markdown]
# ## Data and model
#
# Forty students take a test of five items. Each score is an item's difficulty-adjusted mean
# `alpha[item]` plus the student's ability `theta[student]` times the item's loading
# `loading[item]`, plus noise. We simulate the data, so we know the truth. The scores enter the
# model as `pm.Data`, so that they can be replaced later without rebuilding it.

# %%
rng = np.random.default_rng(42)
N_STUDENTS, N_ITEMS = 40, 5
true_theta = rng.normal(size=N_STUDENTS)
true_loading = np.array([1.0, 0.8, 1.2, 0.6, 0.9])
true_alpha = np.array([3.0, 2.5, 3.5, 2.0, 3.0])
scores = (
    true_alpha
    + true_theta[:, None] * true_loading
    + rng.normal(0.0, 0.5, size=(N_STUDENTS, N_ITEMS))
)
coords = {"student": np.arange(N_STUDENTS), "item": np.arange(N_ITEMS)}


def factor_model(identified: bool) -> pm.Model:
    """The one-factor model; ``identified=True`` makes the loadings positive."""
    with pm.Model(coords=coords) as model:
        theta = pm.Normal("theta", 0.0, 1.0, dims="student")
        if identified:
            loading = pm.HalfNormal("loading", 1.0, dims="item")
        else:
            loading = pm.Normal("loading", 0.0, 1.0, dims="item")
        alpha = pm.Normal("alpha", 3.0, 2.0, dims="item")
        sigma = pm.HalfNormal("sigma", 1.0, dims="item")
        observed = pm.Data("scores", scores, dims=("student", "item"))
        mu = alpha + theta[:, None] * loading
        pm.Normal("y", mu, sigma, observed=observed, dims=("student", "item"))
    return model


model = factor_model(identified=False)

# %% [markdown]
# ## Prior predictive check
#
# Before fitting, check that the priors produce plausible scores: the simulated scores should
# cover the observed ones without being absurdly wide.

# %%
with model:
    prior = pm.sample_prior_predictive(draws=200, random_seed=1)
simulated = np.asarray(prior.prior_predictive["y"]).ravel()
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(simulated, bins=80, range=(-10, 15), density=True, alpha=0.6, label="prior predictive")
ax.hist(scores.ravel(), bins=30, density=True, alpha=0.8, label="observed")
ax.set(xlabel="score", ylabel="density")
ax.legend()
print(
    "prior predictive 1%, 50%, 99% quantiles:", np.quantile(simulated, [0.01, 0.5, 0.99]).round(1)
)

# %% [markdown]
# The priors are wide but of the right order of magnitude. On to the posterior.
#
# ## Sampling: DilationLangevin and NUTS side by side
#
# `compare_with_nuts` runs `pm.sample(step=DilationLangevin())` and `pm.sample` with NUTS on the
# same model with the same settings, and puts the summaries side by side. NUTS is nutpie when it
# is installed and PyMC's own NUTS otherwise. Each `DilationLangevin` chain maps the modes it
# finds with a small population of particles at its first tuning iteration and then proposes an
# exact Metropolis–Hastings jump between them at every iteration. `pm.sample` warns when a
# chain's modes or its draws' log density disagree with another chain's, and `compare_with_nuts`
# also warns (`check_mode_maps`) when the chains' shares of the modes disagree.

# %%
with model:
    first = compare_with_nuts(
        draws=DRAWS,
        tune=TUNE,
        chains=CHAINS,
        random_seed=1,
        var_names=["loading", "alpha", "sigma"],
        sample_kwargs=SAMPLE_KWARGS,
    )
print("NUTS implementation:", first.nuts_sampler)
show(first.timing.round(2))
show(first.table[["mean", "r_hat"]].round(2))

# %% [markdown]
# ## Diagnostics
#
# R-hat compares the chains with each other; values above about 1.01 mean the chains have not
# found the same distribution. The effective sample size (ESS) counts how many independent draws
# the correlated chains are worth. Look at the loadings. The model cannot tell a loading's sign
# (more on that below), and its priors are symmetric, so exactly half of the posterior has
# `loading[0] > 0`. A chain that samples the whole posterior has about half its draws there; a
# chain stuck in one sign has none or all:

# %%
rows = {}
for label, data in (("DilationLangevin", first.dilation), ("NUTS", first.nuts)):
    loading = np.asarray(data.posterior["loading"])  # (chain, draw, item)
    rows[label] = {f"chain {c}": (loading[c, :, 0] > 0).mean() for c in range(loading.shape[0])}
positive_share = pd.DataFrame(rows).T
print("share of each chain's draws with loading[0] > 0 (exact: 0.5):")
show(positive_share.round(2))
disagree = {
    label: float((row.max() - row.min()).round(2)) for label, row in positive_share.iterrows()
}
print("largest difference between two chains' shares:", disagree)
print("largest R-hat of the loadings:", first.table["r_hat"].loc["loading[0]":"loading[4]"].max())

# %% [markdown]
# `DilationLangevin` found this symmetry in the model before sampling: flipping the signs of
# `theta` and `loading` together leaves the log density unchanged (checked at prior draws), so
# every draw it reports is the chain's state under a random sign flip, after an exact
# Metropolis–Hastings test. Its chains therefore hold about half their draws on each side,
# whichever side the chain itself is on. The step says what it found (and PyMC's log says it
# at the start):

# %%
with model:
    print(DilationLangevin().symmetries)

# %% [markdown]
# ## Which modes each chain visited
#
# `DilationLangevin` records the mode of its chain's map each draw lies in (`mode_index`), the
# number of modes in the map (`n_modes`) and the outcome of each jump (`jump_acceptance`).
# `mode_occupancy` tabulates them per chain and mode; here, a summary per chain: how many modes
# its map holds, how many it visited, its largest share of one mode and its jump acceptance rate.
# Chains that mix between the modes have maps of the same size, visit the same modes in the same
# shares and accept jumps; a chain that accepts no jump stays where it started.

# %%
occupancy = mode_occupancy(first.dilation)
per_chain = occupancy.groupby(level="chain").agg(
    modes_in_map=("share", "size"),
    modes_visited=("draws", lambda d: int((d > 0).sum())),
    largest_share=("share", "max"),
    jump_acceptance=("jump_acceptance", "first"),
)
show(per_chain.round(2))

# %% [markdown]
# `plot_mode_occupancy` draws the mode of every draw, chain by chain, and each chain's share of
# each mode. Modes are numbered by location, so chains that found the same modes number them
# alike:

# %%
axes = plot_mode_occupancy(first.dilation)

# %% [markdown]
# Trace and rank plots show the chains graphically. In a trace plot, chains that sample the
# same distribution overlap; in a rank plot (the ranks of each chain's draws among all draws),
# chains that agree have uniform ranks. Here are the loadings of the run whose chains disagree
# most on the sign:

# %%
worst = first.nuts if disagree["NUTS"] >= disagree["DilationLangevin"] else first.dilation
fig = plot_trace(worst, var_names=["loading"])

# %%
fig = plot_rank(worst, var_names=["loading"])

# %% [markdown]
# ## What to do when chains disagree
#
# Chains that settle in different places are the most important warning MCMC gives. Do not
# average them, and do not just run longer: chains of a gradient-based sampler such as NUTS
# rarely cross between well separated modes, however long they run (a `DilationLangevin` chain
# crosses only between the modes of its map, as often as its jumps are accepted, and to the
# copies of its mode under the symmetries it found in the model).
# Instead:
#
# 1. **Find out how they differ.** Per-chain means (above), trace plots and pair plots show which
#    parameters differ and how.
# 2. **Ask whether the modes are the same model in disguise.** Here the draws with negative
#    loadings are the mirror images of those with positive ones: `theta * loading` does not
#    change when both flip sign, so the likelihood cannot tell the two apart. The log density
#    confirms it, at the last draw of the first chain and at its mirror image:

# %%
logp = model.compile_logp()
last = {
    name: np.asarray(first.dilation.posterior[name])[0, -1]
    for name in ("theta", "loading", "alpha", "sigma")
}
point = {
    "theta": last["theta"],
    "loading": last["loading"],
    "alpha": last["alpha"],
    "sigma_log__": np.log(last["sigma"]),
}
mirror = {**point, "theta": -point["theta"], "loading": -point["loading"]}
print(f"log density at a point: {logp(point):.6f}, at its mirror image: {logp(mirror):.6f}")

# %% [markdown]
# 3. **If so, identify the model.** A symmetry like this one (or label switching in mixtures) is
#    removed by a constraint that picks one copy. Here the loadings are made positive: every item
#    measures ability in the same direction, a natural assumption for test items. (Constraining
#    only the first loading is the textbook minimum, but it can leave a local mode in which that
#    loading sits near zero and all the others flip sign; NUTS chains found one on this data set
#    when we tried.)
# 4. **If the modes are genuinely different explanations** (different parameter values that fit
#    the data differently), the posterior really is multimodal. Then the share of chains in each
#    mode is *not* an estimate of its probability. Compare the explanations with posterior
#    predictive checks, reconsider the model, or use a sampler that weighs modes:
#    `DilationLangevin` when its chains visit the same modes in the same shares (check with
#    `mode_occupancy` as above), `sample_dilation` (which also estimates each mode's weight and
#    the evidence) or `pm.sample_smc` (see the [tuning guide](tuning_guide)).
#
# ## The identified model

# %%
identified = factor_model(identified=True)
with identified:
    second = compare_with_nuts(
        draws=DRAWS,
        tune=TUNE,
        chains=CHAINS,
        random_seed=1,
        var_names=["loading", "alpha", "sigma"],
        sample_kwargs=SAMPLE_KWARGS,
    )
show(second.timing.round(2))
show(second.table[["mean", "sd", "ess_bulk", "r_hat"]].round(2))
print("true loadings:", true_loading, " true alpha:", true_alpha)

# %%
for label, data in (("DilationLangevin", second.dilation), ("NUTS", second.nuts)):
    loading = np.asarray(data.posterior["loading"])
    print(f"{label}: mean of loading[0] in each chain: {loading[:, :, 0].mean(axis=1).round(2)}")
largest_rhat = second.table["r_hat"].max()
print("largest R-hat:", largest_rhat.round(3).to_dict())
trusted = "dilation" if largest_rhat["dilation"] <= largest_rhat["nuts"] else "nuts"
best = getattr(second, trusted)
print(
    "the run with the smaller largest R-hat:",
    {"dilation": "DilationLangevin", "nuts": "NUTS"}[trusted],
)

# %% [markdown]
# With the sign fixed there is one mode, and the chains of a sampler that works on this model
# agree with each other, with loadings close to the values the data were simulated with. Check
# each sampler's largest R-hat above before reading its means: a sampler whose chains still
# disagree on a unimodal posterior has not converged (too few iterations, or a posterior it is
# not suited for), and its draws should not be used. With short runs (as in the fast mode of the
# documentation build, 200 draws per chain) R-hat can be noticeably above 1.01 for the
# slower-mixing parameters, here the intercepts `alpha`, which trade off against the students'
# mean ability; run longer before trusting the last digit. (`ess_per_s` in `timing` is per
# second of wall time, compilation included; for short runs compilation dominates.) The
# marginal posteriors of the two samplers, overlaid, then the trace and rank plots of the run
# with the smaller largest R-hat:

# %%
fig = second.plot(var_names=["loading"])

# %%
fig = plot_trace(best, var_names=["loading"])

# %%
fig = plot_rank(best, var_names=["loading"])

# %% [markdown]
# ## Posterior predictive check
#
# Replicate the data from the posterior (the run with the smaller largest R-hat) and compare
# with the observed scores, first as a whole, then on what a factor model is about: the
# correlations between items.

# %%
with identified:
    pm.sample_posterior_predictive(
        best, random_seed=2, progressbar=False, extend_inferencedata=True
    )
fig = plot_ppc(best, num_samples=50)
replicated = np.asarray(best.posterior_predictive["y"])  # (chain, draw, student, item)

# %%
flat = replicated.reshape(-1, N_STUDENTS, N_ITEMS)[:: max(1, replicated.shape[1] // 50)]
pairs = [(i, j) for i in range(N_ITEMS) for j in range(i + 1, N_ITEMS)]
observed_corr = np.corrcoef(scores.T)
replicated_corr = np.array([np.corrcoef(sample.T) for sample in flat])
fig, ax = plt.subplots(figsize=(8, 3))
for k, (i, j) in enumerate(pairs):
    lo, hi = np.quantile(replicated_corr[:, i, j], [0.05, 0.95])
    ax.plot([k, k], [lo, hi], color="C0", lw=4, alpha=0.5)
    ax.plot(k, observed_corr[i, j], "ko")
ax.set_xticks(range(len(pairs)), [f"{i},{j}" for i, j in pairs])
ax.set(xlabel="item pair", ylabel="correlation", title="observed (black) vs 90% predictive band")
inside = np.mean(
    [
        np.quantile(replicated_corr[:, i, j], 0.05)
        <= observed_corr[i, j]
        <= np.quantile(replicated_corr[:, i, j], 0.95)
        for i, j in pairs
    ]
)
print(f"observed item correlations inside the 90% predictive band: {inside:.0%}")

# %% [markdown]
# The replicated scores look like the observed ones, and the observed correlations between items
# fall within the spread of the replicated correlations: the model captures the factor structure
# it was built for. A model that missed it (say, one without the `theta * loading` term) would
# put the observed correlations far above its bands.

# %% [markdown]
# ## When the data change
#
# Suppose the scores of item 2 turn out to have been recorded one point too high. With the
# scores in `pm.Data`, `pm.set_data` replaces them in the model, and the next `pm.sample` call
# samples the new posterior, also with a step object built before the change: a
# `DilationLangevin` compiles its log density with the data in it, and compiles it again when
# a run starts after they changed (as PyMC's own step methods read the data at every call).
# Here one step object samples (two chains) before and after the correction, on a fresh copy
# of the identified model (on PyMC 5.28, `pm.sample` on a model whose `pm.Data` observations
# have been through `pm.sample_posterior_predictive`, as above, fails inside PyMC with
# "Cannot convert None to a tensor variable", whatever the step method):

# %%
updated = factor_model(identified=True)
with updated:
    step = DilationLangevin()
    before = pm.sample(step=step, draws=DRAWS, tune=TUNE, chains=2, random_seed=3, **SAMPLE_KWARGS)
    corrected = scores.copy()
    corrected[:, 2] -= 1.0
    pm.set_data({"scores": corrected})
    after = pm.sample(step=step, draws=DRAWS, tune=TUNE, chains=2, random_seed=3, **SAMPLE_KWARGS)
    pm.sample_posterior_predictive(
        after, random_seed=4, progressbar=False, extend_inferencedata=True
    )
alpha_2 = {
    label: float(np.asarray(data.posterior["alpha"])[..., 2].mean())
    for label, data in (("before", before), ("after", after))
}
print("posterior mean of alpha[2]:", {k: round(v, 2) for k, v in alpha_2.items()})
print(f"shift: {alpha_2['after'] - alpha_2['before']:.2f} (the correction: -1.00)")
replicated_2 = np.asarray(after.posterior_predictive["y"])[..., 2]
print(
    f"item 2: mean corrected score {corrected[:, 2].mean():.2f}, "
    f"mean replicated score {replicated_2.mean():.2f}"
)

# %% [markdown]
# The intercept of item 2 moved down by the correction, and the posterior predictive draws of
# the new run replicate the corrected scores
# (`pm.sample_posterior_predictive` uses the data now in the model). A step object can thus be
# kept across data updates, as in a loop over data sets; building a new one is as good.
