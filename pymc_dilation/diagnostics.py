"""Warnings for population results the sampler cannot vouch for.

Checked on every :func:`~pymc_dilation.sample_dilation` and
:func:`~pymc_dilation.sample_logdensity` result, from what ``sample_stats`` holds:

- the importance weights behind the mode weights and the evidence have a Pareto k̂ above
  :data:`PARETO_K_LIMIT` (their variance may be infinite: the estimates cannot be trusted);
- a mode's share of the final particles disagrees with its estimated weight by more than
  Monte Carlo error allows (the refinement did not settle the weights);
- two chains disagree on a mode (found by one, missed by the other) or on its weight.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

__all__ = ["PARETO_K_LIMIT", "UnreliableResultWarning", "unreliable_reasons", "warn_unreliable"]


class UnreliableResultWarning(UserWarning):
    """A population result the sampler cannot vouch for (a ``UserWarning``, so that
    ``warnings.filterwarnings`` can single it out)."""


PARETO_K_LIMIT = 0.7
"""Above this Pareto k̂, importance-sampling estimates are unreliable (Vehtari et al., 2024)."""

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
    return reasons


def warn_unreliable(stats: xr.Dataset) -> None:
    """One :class:`UnreliableResultWarning` per reason found by :func:`unreliable_reasons`."""
    for reason in unreliable_reasons(stats):
        warnings.warn(reason, UnreliableResultWarning, stacklevel=4)
