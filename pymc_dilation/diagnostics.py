"""Warnings for population results the sampler cannot vouch for.

Checked on every :func:`~pymc_dilation.sample_dilation` and
:func:`~pymc_dilation.sample_logdensity` result, from what ``sample_stats`` holds:

- the importance weights behind the mode weights and the evidence have a Pareto k̂ above
  :data:`PARETO_K_LIMIT` (their variance may be infinite: the estimates cannot be trusted);
- successive bridges from the mode map to the posterior still disagree on ``log Z`` by more
  than :data:`~pymc_dilation.engine.population.BRIDGE_AGREEMENT` after the last one
  (``bridge_evidence_change``; see :func:`~pymc_dilation.engine.population.map_population_of`);
- a mode's share of the final particles disagrees with its estimated weight by more than
  Monte Carlo error allows (the refinement did not settle the weights);
- two chains disagree on a mode (found by one, missed by the other) or on its weight;
- the refined population fails a convergence check of its own
  (:mod:`pymc_dilation.engine.convergence`): it breaks the Stein identity of the target
  (:data:`STEIN_Z_LIMIT`, :data:`STEIN_MEAN_EFFECT`, :data:`STEIN_COV_EFFECT`), is narrower
  than its scores allow (``stein_spread`` below
  :data:`~pymc_dilation.engine.convergence.SPREAD_LIMIT`), its two halves
  disagree (:func:`subpopulation_rhat_limit`), they are worth too few independent draws
  (:data:`PARTICLE_ESS_SHARE`), or many particles are stuck
  (:data:`STUCK_SHARE_LIMIT`) or never moved (:data:`UNMOVED_SHARE_LIMIT`).

The thresholds of the convergence checks were set on these measurements (2000 particles, one
chain, defaults; seeds 1, 2 and 20261122; PyMC 5.28 and 6.4). Posteriors sampled right, which
must stay quiet: the conjugate-normal model, a collinear regression with flat priors, the
posteriordb ports but gp_pois_regr, ``rand2d-1..3`` and ``rand10d-1..3`` of
``benchmarks/randomized.py`` (seeds 1–3 for rand10d), the three families of
``benchmarks/families.py`` and a two-component ``NormalMixture``. Their largest figures:
``stein_mean_z`` 2.4, ``stein_cov_z`` 3.0, ``subpopulation_rhat`` 1.006, ``particle_ess``
no lower than 1470 of 2000, ``stuck_share`` 0.17, ``unmoved_share`` 0.002. Results that are
wrong: centered eight schools (``theta ~ N(mu, tau)``; tau collapses to about 1e-6), Neal's
funnel in 9 dimensions, gp_pois_regr. Centered eight schools: ``subpopulation_rhat`` 1.78 to
2.12, ``particle_ess`` 5, ``stuck_share`` 0.81 to 0.89, ``unmoved_share`` 0.46 to 0.67. The
funnel: ``subpopulation_rhat`` 1.15 to 1.23, ``particle_ess`` 17, ``stuck_share`` 0.84.
gp_pois_regr at seed 20261122: 12 reference sd off on PyMC 5 (``stuck_share`` 0.99,
``particle_ess`` 40, ``stein_mean_z`` 18); 0.56 sd off on PyMC 6 with every other check quiet
(Pareto k-hat 0.40, ``subpopulation_rhat`` 1.008, ``stuck_share`` 0.05) but ``particle_ess``
179. One more result was flagged: rand10d-3 at seed 20261122 on PyMC 6 (``particle_ess`` 207),
whose mode weights were off by a total variation of 0.35. Centered eight schools with
``precondition="none"`` (``stein_mean_z`` 3.0 / 4.3, ``subpopulation_rhat`` 1.07 / 1.06) is
caught by its Pareto k-hat (1.3 / 1.2).

``stein_spread`` (2026-12-07, PyMC 6.4, 2000 particles): 1.05–1.48 on the posteriordb ports
but gp_pois_regr (NaN: fewer effective particles than parameters), the 10-D and 50-D
mixtures, the label-switching mixtures, the sign-ambiguous regression and the 10–50-D
regressions; 10–65 on the Flat bimodal model and the 2-D mixtures; 0.0 on Neal's funnel
collapsed into its neck (seeds 1–3), where the Stein covariance test's noise had let one
random stream through unwarned.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from pymc_dilation.engine.convergence import (
    CHECK_NAMES,
    DRIFT_Z_LIMIT,
    PARTICLE_ESS_SHARE,
    STEIN_COV_EFFECT,
    STEIN_MEAN_EFFECT,
    STEIN_Z_LIMIT,
    STOP_MARGIN,
    STUCK_SHARE_LIMIT,
    UNMOVED_SHARE_LIMIT,
    failed_checks,
    subpopulation_rhat_limit,
)
from pymc_dilation.engine.population import BRIDGE_AGREEMENT

__all__ = [
    "PARETO_K_LIMIT",
    "STEIN_Z_LIMIT",
    "STEIN_MEAN_EFFECT",
    "STEIN_COV_EFFECT",
    "STUCK_SHARE_LIMIT",
    "PARTICLE_ESS_SHARE",
    "UNMOVED_SHARE_LIMIT",
    "UnreliableResultWarning",
    "subpopulation_rhat_limit",
    "unreliable_reasons",
    "warn_unreliable",
]


class UnreliableResultWarning(UserWarning):
    """A population result the sampler cannot vouch for (a ``UserWarning``, so that
    ``warnings.filterwarnings`` can single it out)."""


PARETO_K_LIMIT = 0.7
"""Above this Pareto k̂, importance-sampling estimates are unreliable (Vehtari et al., 2024)."""

ADVICE = (
    "Centered hierarchies are sampled non-centered automatically (sample_stats.attrs"
    "['centering']); for a funnel that remains, write that part non-centered yourself "
    "(theta = mu + tau * z with z ~ N(0, 1)) or sample the model with pm.sample "
    "(DilationLangevin, or NUTS with a higher target_accept); if its posterior has no funnel, "
    "increase refine_sweeps or draws."
)
"""What the convergence warnings tell the user to do."""

_SLACK = 0.03
"""Weight differences below this are never reported (a 3-point share of the particles)."""


def _weight_tolerance(weight, se_sq, n):
    return _SLACK + 4.0 * np.sqrt(np.clip(weight * (1.0 - weight), 0.0, None) / n + se_sq)


def _match(loc_a, cov_a, locations_b) -> int | None:
    """Index of the mode of ``locations_b`` within 3 local sds (Mahalanobis) of ``loc_a``."""
    diffs = locations_b - loc_a
    try:
        dist = np.sqrt(np.einsum("kd,kd->k", diffs, np.linalg.solve(cov_a, diffs.T).T))
    except np.linalg.LinAlgError:
        return None
    dist = np.where(np.isfinite(dist), dist, np.inf)
    best = int(np.argmin(dist)) if len(dist) else None
    return best if best is not None and dist[best] < 3.0 * np.sqrt(len(loc_a)) else None


def _stat(stats: xr.Dataset, name: str, chain: int) -> float:
    return float(stats[name][chain]) if name in stats else np.nan


def convergence_reasons(stats: xr.Dataset) -> list[str]:
    """The population's own convergence checks that failed, one sentence each."""
    reasons = []
    n = stats.sizes["draw"]
    for chain in range(stats.sizes["chain"]):
        figures = {name: _stat(stats, name, chain) for name in CHECK_NAMES}
        failed = set(failed_checks(figures, n))
        found = []
        if "stein_mean_z" in failed:
            found.append(
                f"the mean of the log density's gradient over the particles is "
                f"{figures['stein_mean_z']:.1f} standard errors from 0 (stein_mean_z > "
                f"{STEIN_Z_LIMIT:g})"
            )
        if "stein_cov_z" in failed:
            found.append(
                f"the particles and their gradients break the identity E[x grad'] = -I by "
                f"{figures['stein_cov_z']:.1f} standard errors (stein_cov_z > {STEIN_Z_LIMIT:g})"
            )
        if "stein_spread" in failed:
            found.append(
                "the particles are narrower than their gradients allow (the smallest "
                "eigenvalue of Cov(x) Cov(grad), at least 1 for draws of any target, is "
                f"{figures['stein_spread']:.2g} of what a Gaussian's draws would show: "
                "stein_spread)"
            )
        if "subpopulation_rhat" in failed:
            found.append(
                f"the two halves of the particles disagree (subpopulation_rhat "
                f"{figures['subpopulation_rhat']:.3f} > {subpopulation_rhat_limit(n):.3f})"
            )
        if "particle_ess" in failed:
            found.append(
                f"the {n} particles are worth {figures['particle_ess']:.0f} independent draws "
                f"(particle_ess < {PARTICLE_ESS_SHARE:g} x draws): copies made by the "
                "resampling are still alike"
            )
        if "stuck_share" in failed:
            found.append(
                f"{figures['stuck_share']:.0%} of the particles are stuck (acceptance below 5% "
                "in the last refinement sweep)"
            )
        if "unmoved_share" in failed:
            found.append(
                f"{figures['unmoved_share']:.0%} of the particles never moved during the refinement"
            )
        if "drift_z" in failed:
            found.append(
                f"the particles' mean still moved by {figures['drift_effect']:.2f} sd in the "
                f"last sweep, {figures['drift_z']:.1f} standard errors (drift_z > "
                f"{DRIFT_Z_LIMIT:g}): they have not reached the posterior along a slow direction"
            )
        if "settled_sweep" in failed:
            found.append(
                "no refinement sweep passed these checks with the margin the refinement stops "
                f"at ({STOP_MARGIN:g} times stricter), so figures just inside their limits are "
                "no all-clear (settled_sweep = -1)"
            )
        invalid = _stat(stats, "invalid_share", chain)
        if invalid > 0:
            found.append(
                f"{invalid:.1%} of the particles ended without a finite log density (escaped "
                "or diverged) and were replaced by copies of valid ones"
            )
        if found:
            reasons.append(
                f"Chain {chain}: the population did not converge to the posterior: "
                + "; ".join(found)
                + ". This happens in funnels (centered hierarchical models), where the "
                "particles gather in the neck, and when the refinement is too short. The result "
                "cannot be trusted. " + ADVICE
            )
    return reasons


def unreliable_reasons(stats: xr.Dataset) -> list[str]:
    """Why the result cannot be vouched for, one sentence each (empty when all is well)."""
    reasons = []
    n = stats.sizes["draw"]
    weights = np.asarray(stats["mode_weight"])
    se = np.asarray(stats["mode_weight_se"])
    particles = np.asarray(stats["mode_particles"])
    for chain, k_hat in enumerate(np.asarray(stats["pareto_k"])):
        if k_hat > PARETO_K_LIMIT:
            reasons.append(
                f"Chain {chain}: the importance weights behind the mode weights and "
                f"log_marginal_likelihood have Pareto k-hat {k_hat:.2f} > {PARETO_K_LIMIT}; "
                "those estimates are unreliable (a mode far from Gaussian, or a funnel)."
            )
        change = _stat(stats, "bridge_evidence_change", chain)
        if change > BRIDGE_AGREEMENT:
            reasons.append(
                f"Chain {chain}: successive bridges from the mode map to the posterior still "
                f"disagree on log_marginal_likelihood by {change:.2f} nats after "
                f"{_stat(stats, 'bridge_passes', chain):.0f} (bridge_evidence_change > "
                f"{BRIDGE_AGREEMENT:g}): the evidence and the mode weights are uncertain, and "
                "the particles may still lag along a slow direction. Increase draws, or "
                "compare with DilationLangevin's chains."
            )
        valid = np.isfinite(weights[chain])
        share = particles[chain, valid] / n
        tol = _weight_tolerance(weights[chain, valid], se[chain, valid] ** 2, n)
        off = np.flatnonzero(np.abs(share - weights[chain, valid]) > tol)
        if off.size:
            k = off[0]
            reasons.append(
                f"Chain {chain}: mode {k} holds {share[k]:.3f} of the particles but its estimated "
                f"weight is {weights[chain, k]:.3f} ± {se[chain, k]:.3f}; the mode weights did "
                "not converge. Increase refine_sweeps or draws."
            )
    locations = np.asarray(stats["mode_location"])
    covariances = np.asarray(stats["mode_covariance"])
    for a in range(len(weights)):
        for b in range(len(weights)):
            if a == b:
                continue
            for k in np.flatnonzero(weights[a] > _SLACK):
                valid = np.isfinite(weights[b])
                match = _match(locations[a, k], covariances[a, k], locations[b, valid])
                if match is None:
                    reasons.append(
                        f"Chain {a} found a mode of weight {weights[a, k]:.3f} (mode {k}) that "
                        f"chain {b} did not find. Increase draws so that more paths explore."
                    )
                    continue
                diff = abs(weights[a, k] - weights[b, match])
                if a < b and diff > _SLACK + 4.0 * np.hypot(se[a, k], se[b, match]):
                    reasons.append(
                        f"Chains {a} and {b} disagree on the weight of a mode: "
                        f"{weights[a, k]:.3f} ± {se[a, k]:.3f} vs "
                        f"{weights[b, match]:.3f} ± {se[b, match]:.3f}."
                    )
    return reasons + convergence_reasons(stats)


def warn_unreliable(stats: xr.Dataset) -> None:
    """One :class:`UnreliableResultWarning` per reason found by :func:`unreliable_reasons`."""
    for reason in unreliable_reasons(stats):
        warnings.warn(reason, UnreliableResultWarning, stacklevel=4)
