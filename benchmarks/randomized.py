"""The randomized multimodal suite: Gaussian mixtures generated from seeds, exact answers known.

A target is named ``rand{d}d-{seed}`` (e.g. ``rand2d-3``); its seed draws everything:

- the number of modes ``K``: 30–50 in 2-D, 4–8 in 10-D and 50-D;
- mode places: uniform in ``[-40, 40]²`` in 2-D; in 10-D and 50-D a common offset of length
  15–25 in a random direction plus ``N(0, s² I)`` per mode with ``s = 12 / √(2d)``, so the
  modes sit far from the initial point (the origin), on no symmetric pattern about it, about
  12 units apart in any dimension (6 to 24 of their own sds);
- unequal weights ``Dirichlet(1, …, 1)`` and per-mode scales ``σ_k`` log-uniform on
  ``[0.5, 2]`` (up to 4× apart).

The PyMC model is ``x ~ N(0, 10² I)`` plus ``pm.Potential(log Σ_k w_k N(x; μ_k, σ_k² I))``. Its
posterior is again a Gaussian mixture, with component ``k`` of mass proportional to
``w_k N(μ_k; 0, (10² + σ_k²) I)``, and the evidence is ``Z = Σ_k w_k N(μ_k; 0, (10² + σ_k²) I)``.
Samples are scored by the posterior component of largest responsibility; the reference
weights are the same classification applied to 200 000 exact draws, so overlapping components
cost no bias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = ["RandomMixture", "target", "build_model", "is_randomized", "score", "SUITE"]

PRIOR_SD = 10.0
SPREAD = 12.0
SUITE = [f"rand{d}d-{seed}" for d in (2, 10, 50) for seed in (1, 2, 3)]
"""The targets ``python -m benchmarks run --targets randomized`` runs."""

_NAME = re.compile(r"rand(\d+)d-(\d+)$")


def is_randomized(name: str) -> bool:
    """Whether ``name`` names a target of this suite."""
    return _NAME.match(name) is not None


@dataclass(frozen=True)
class RandomMixture:
    """A generated mixture target and its exact posterior."""

    name: str
    means: np.ndarray  # (K, d) likelihood-mixture means
    scales: np.ndarray  # (K,)
    weights: np.ndarray  # (K,) likelihood-mixture weights

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _log_mass(self) -> np.ndarray:
        var = PRIOR_SD**2 + self.scales**2
        sq = np.sum(self.means**2, axis=1)
        return np.log(self.weights) - 0.5 * self.dim * np.log(2 * np.pi * var) - 0.5 * sq / var

    @property
    def log_evidence(self) -> float:
        """Exact ``log Z`` of the model."""
        log_mass = self._log_mass()
        top = log_mass.max()
        return float(top + np.log(np.exp(log_mass - top).sum()))

    @property
    def posterior_weights(self) -> np.ndarray:
        """Exact posterior mass of each component."""
        log_mass = self._log_mass()
        return np.exp(log_mass - self.log_evidence)

    @property
    def posterior_components(self) -> tuple[np.ndarray, np.ndarray]:
        """Means ``(K, d)`` and sds ``(K,)`` of the posterior's components."""
        var = 1.0 / (1.0 / self.scales**2 + 1.0 / PRIOR_SD**2)
        return self.means * (var / self.scales**2)[:, None], np.sqrt(var)

    def classify(self, samples: np.ndarray) -> np.ndarray:
        """Posterior component of largest responsibility for each row of ``samples``."""
        means, sds = self.posterior_components
        log_w = np.log(self.posterior_weights)
        out = np.empty(len(samples), dtype=int)
        for start in range(0, len(samples), 20000):
            block = samples[start : start + 20000]
            sq = ((block[:, None, :] - means[None]) ** 2).sum(-1)
            log_r = log_w - self.dim * np.log(sds) - 0.5 * sq / sds**2
            out[start : start + 20000] = np.argmax(log_r, axis=1)
        return out

    def exact_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent posterior draws."""
        means, sds = self.posterior_components
        k = rng.choice(len(sds), size=n, p=self.posterior_weights)
        return means[k] + sds[k, None] * rng.standard_normal((n, self.dim))

    @property
    def reference_weights(self) -> np.ndarray:
        """Classification shares of 200 000 exact draws (what a perfect sampler scores)."""
        return _reference_weights(self.name)

    def logdensity(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batched log posterior (unnormalised) and gradient, ``(n, d) -> ((n,), (n, d))``."""
        x = np.atleast_2d(x)
        diff = x[:, None, :] - self.means[None]
        var = self.scales**2
        log_comp = (
            np.log(self.weights)
            - 0.5 * self.dim * np.log(2 * np.pi * var)
            - 0.5 * np.einsum("nkd,nkd->nk", diff, diff) / var
        )
        top = log_comp.max(axis=1, keepdims=True)
        resp = np.exp(log_comp - top)
        norm = resp.sum(axis=1, keepdims=True)
        prior = -0.5 * np.einsum("nd,nd->n", x, x) / PRIOR_SD**2
        prior -= 0.5 * self.dim * np.log(2 * np.pi * PRIOR_SD**2)
        logp = (top + np.log(norm))[:, 0] + prior
        grad = -np.einsum("nk,nkd->nd", resp / norm / var, diff) - x / PRIOR_SD**2
        return logp, grad


@cache
def target(name: str) -> RandomMixture:
    """The target ``rand{d}d-{seed}``."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a randomized target (rand<d>d-<seed>).")
    dim, seed = int(match.group(1)), int(match.group(2))
    rng = np.random.default_rng([dim, seed])
    if dim <= 2:
        n_modes = int(rng.integers(30, 51))
        means = rng.uniform(-40.0, 40.0, size=(n_modes, dim))
    else:
        n_modes = int(rng.integers(4, 9))
        direction = rng.standard_normal(dim)
        offset = rng.uniform(15.0, 25.0) * direction / np.linalg.norm(direction)
        means = offset + SPREAD / np.sqrt(2 * dim) * rng.standard_normal((n_modes, dim))
    scales = np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=n_modes))
    weights = rng.dirichlet(np.ones(n_modes))
    return RandomMixture(name, means, scales, weights)


@cache
def _reference_weights(name: str) -> np.ndarray:
    mixture = target(name)
    draws = mixture.exact_draws(200_000, np.random.default_rng(0))
    counts = np.bincount(mixture.classify(draws), minlength=len(mixture.weights))
    return counts / counts.sum()


def build_model(name: str) -> pm.Model:
    """The PyMC model of target ``name``: one vector ``x``."""
    mixture = target(name)
    var = mixture.scales**2
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, PRIOR_SD, shape=mixture.dim)
        sq = pt.sum((x[None, :] - pt.as_tensor(mixture.means)) ** 2, axis=1)
        log_comp = (
            np.log(mixture.weights) - 0.5 * mixture.dim * np.log(2 * np.pi * var) - 0.5 * sq / var
        )
        pm.Potential("mixture", pm.math.logsumexp(log_comp))
    return model


def score(name: str, samples: np.ndarray) -> dict[str, float]:
    """Mode-weight TV against the reference, and the worst within-mode mean error in sds."""
    mixture = target(name)
    samples = np.asarray(samples).reshape(-1, mixture.dim)
    labels = mixture.classify(samples)
    shares = np.bincount(labels, minlength=len(mixture.weights)) / len(samples)
    tv = 0.5 * float(np.abs(shares - mixture.reference_weights).sum())
    means, sds = mixture.posterior_components
    errors = [
        np.max(np.abs(samples[labels == k].mean(axis=0) - means[k])) / sds[k]
        for k in np.flatnonzero(np.bincount(labels, minlength=len(sds)) >= 100)
    ]
    return {"tv": tv, "within_mean_err": float(max(errors)) if errors else float("nan")}
