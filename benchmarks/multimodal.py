"""The multimodal suite: Gaussian-mixture posteriors whose mode weights are known exactly.

Each target is a PyMC model ``x ~ N(0, 10² I)`` plus a ``pm.Potential`` Gaussian-mixture term
with unit-variance components. All mode centers of a target lie at the same distance from the
origin, so the prior multiplies every component's mass by the same factor and the posterior mode
weights equal the mixture weights.

- ``mix2d``: 2-D, two modes at (±5, 0), weights 0.2 / 0.8;
- ``mix10d`` and ``mix50d``: four modes at (±6, ±6) on the first two axes, weights
  0.1 / 0.2 / 0.3 / 0.4.

The same targets are available as NumPy batched log densities (:func:`logdensity`) for
``sample_logdensity`` and the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = ["TARGETS", "MixtureTarget", "build_model", "mode_weights", "mode_weight_tv"]

PRIOR_SD = 10.0


@dataclass(frozen=True)
class MixtureTarget:
    """A mixture target of the suite: dimension, mode centers (full vectors) and weights."""

    name: str
    dim: int
    centers: np.ndarray
    weights: np.ndarray
    tv_goal: float

    def logdensity(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched log posterior and gradient, ``(n, d) -> ((n,), (n, d))``."""
        x = np.atleast_2d(x)
        diff = x[:, None, :] - self.centers[None]  # (n, K, d)
        log_comp = np.log(self.weights) - 0.5 * np.einsum("nkd,nkd->nk", diff, diff)
        top = log_comp.max(axis=1, keepdims=True)
        resp = np.exp(log_comp - top)
        norm = resp.sum(axis=1, keepdims=True)
        logp = (top + np.log(norm))[:, 0] - 0.5 * np.einsum("nd,nd->n", x, x) / PRIOR_SD**2
        grad = -np.einsum("nk,nkd->nd", resp / norm, diff) - x / PRIOR_SD**2
        return logp, grad


def _four_modes(dim: int) -> np.ndarray:
    centers = np.zeros((4, dim))
    centers[:, :2] = [[-6, -6], [-6, 6], [6, -6], [6, 6]]
    return centers


_FOUR_WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])
TARGETS: dict[str, MixtureTarget] = {
    "mix2d": MixtureTarget("mix2d", 2, np.array([[-5.0, 0], [5.0, 0]]), np.array([0.2, 0.8]), 0.03),
    "mix10d": MixtureTarget("mix10d", 10, _four_modes(10), _FOUR_WEIGHTS, 0.03),
    "mix50d": MixtureTarget("mix50d", 50, _four_modes(50), _FOUR_WEIGHTS, 0.05),
}


def build_model(name: str) -> pm.Model:
    """The PyMC model of target ``name``: one vector ``x`` of the target's dimension."""
    target = TARGETS[name]
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, PRIOR_SD, shape=target.dim)
        diff = x[None, :] - pt.as_tensor(target.centers)
        log_comp = np.log(target.weights) - 0.5 * pt.sum(diff**2, axis=1)
        pm.Potential("mixture", pm.math.logsumexp(log_comp))
    return model


def mode_weights(samples: np.ndarray, name: str) -> np.ndarray:
    """Fraction of ``(n, d)`` samples nearest to each mode center of target ``name``."""
    centers = TARGETS[name].centers
    samples = np.asarray(samples).reshape(-1, centers.shape[1])
    dist = ((samples[:, None, :2] - centers[None, :, :2]) ** 2).sum(-1)
    return np.bincount(dist.argmin(axis=1), minlength=len(centers)) / len(samples)


def mode_weight_tv(samples: np.ndarray, name: str) -> float:
    """Total-variation distance between the samples' mode weights and the true ones."""
    return float(0.5 * np.abs(mode_weights(samples, name) - TARGETS[name].weights).sum())


def posterior_samples(idata) -> np.ndarray:
    """``(chain*draw, d)`` draws of ``x`` from what ``pm.sample``/``sample_smc`` returned."""
    x = np.asarray(idata.posterior["x"])
    return x.reshape(-1, x.shape[-1])


def log_evidence(name: str) -> float:
    """Exact ``log Z`` of target ``name``: its unnormalised unit components under the prior,
    ``Z = Σ_k w_k (2π)^{d/2} N(μ_k; 0, (1 + 10²) I)``."""
    target = TARGETS[name]
    var = 1.0 + PRIOR_SD**2
    log_terms = (
        np.log(target.weights)
        - 0.5 * target.dim * np.log(var)
        - 0.5 * np.sum(target.centers**2, axis=1) / var
    )
    top = log_terms.max()
    return float(top + np.log(np.exp(log_terms - top).sum()))
