"""Correctness gate: every posteriordb port, sampled by pm.sample(step=DilationLangevin()) and by
sample_dilation.

For each reference parameter: |mean - reference mean| <= 0.15 reference sd and the sd within
15 % of the reference sd. The ports (benchmarks/posteriordb.py) were checked against their
references with NUTS first (``python -m benchmarks check-ports``). Marked slow (about 2-3 minutes
per PyMC version); CI runs it on both.

Sizes: 2 chains, 1000 tuning iterations and 1000 draws (issue 12's goal; it needed 4 chains of
1500 and 5000 for gp_pois_regr with the diagonal preconditioner). Known failure: gp_pois_regr,
a funnel in the GP hyperparameters rho and alpha (they set the scale of the whitened latent f):
one dense preconditioner cannot fit both the neck and the mouth, the step size falls to fit the
neck, and with 2 x 1000 draws the worst mean is off by 0.74 reference sd on PyMC 5 and its sd
by 0.22 on PyMC 6 (seed 20261122; min bulk ESS 5-12 in the end-to-end benchmark). It is marked
xfail (not strict). The other ports' worst errors at this seed are 0.02-0.07 sd.

The population sampler (defaults, 2000 particles, one chain; its mode weights and evidence are
tested in tests/test_population.py) meets the same tolerance on every port, gp_pois_regr
included. Its funnel defeats one importance step from the map's Gaussian (the particles used
to gather in the neck: 12 reference sd off on PyMC 5, 0.56 on PyMC 6, warned); the bridge from
that Gaussian to the posterior (sequential Monte Carlo, engine.tempering, 4 levels) now gives a
worst error of 0.08 sd at seed 20261122 (0.05-0.07 at seeds 1 and 2) on both versions.
"""

import os

import pymc as pm
import pytest

from benchmarks import posteriordb as pdb
from pymc_dilation import DilationLangevin, sample_dilation

TOLERANCE = 0.15
DRAWS = 1000
CHAINS = 2

try:
    pdb.posteriordb_dir()
except FileNotFoundError as err:  # pragma: no cover - CI has ../shared beside the clone
    pytest.skip(str(err), allow_module_level=True)


KNOWN_FAILURES = {
    "gp_pois_regr-gp_pois_regr": "funnel in rho/alpha: no single preconditioner fits it",
}
POPULATION_KNOWN_FAILURES: dict[str, str] = {}


def _cases(known: dict[str, str]) -> list:
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=known[name], strict=False))
        if name in known
        else name
        for name in pdb.POSTERIOR_NAMES
    ]


def _assert_matches_reference(idata, name):
    failures = [
        f"{row['name']}: mean err {row['mean_err']:.3f} sd, sd err {row['sd_err']:.3f}"
        for row in pdb.moment_errors(idata, name)
        if row["mean_err"] > TOLERANCE or row["sd_err"] > TOLERANCE
    ]
    assert not failures, f"{name} ({os.linesep.join(failures)})"


@pytest.mark.slow
@pytest.mark.parametrize("name", _cases(KNOWN_FAILURES))
def test_dilation_langevin_matches_reference(name):
    with pdb.build_model(name):
        idata = pm.sample(
            draws=DRAWS, tune=DRAWS, chains=CHAINS, cores=1, step=DilationLangevin(),
            random_seed=20261122, progressbar=False, compute_convergence_checks=False,
        )  # fmt: skip
    _assert_matches_reference(idata, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", _cases(POPULATION_KNOWN_FAILURES))
def test_sample_dilation_matches_reference(name):
    with pdb.build_model(name):
        idata = sample_dilation(draws=2000, random_seed=20261122, progressbar=False)
    _assert_matches_reference(idata, name)
