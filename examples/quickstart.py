"""Quick start: DilationLangevin on a bimodal posterior, beside PyMC's NUTS.

Run with ``python examples/quickstart.py`` (add ``--fast`` for a smaller run).
"""

import argparse

import arviz as az
import numpy as np
import pymc as pm

from pymc_dilation import DilationLangevin


def build_model() -> pm.Model:
    """A scalar with a wide normal prior and a two-mode likelihood (modes at -2 and +10)."""
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 10.0)
        modes = pm.math.stack(
            [pm.logp(pm.Normal.dist(-2.0, 1.0), x), pm.logp(pm.Normal.dist(10.0, 1.0), x)]
        )
        pm.Potential("two_modes", pm.math.logsumexp(modes) + np.log(0.5))
    return model


def main(fast: bool = False) -> None:
    draws, chains = (200, 8) if fast else (1000, 16)
    with build_model():
        dilation = pm.sample(
            draws=draws, chains=chains, cores=1, step=DilationLangevin(), random_seed=1
        )
        nuts = pm.sample(draws=draws, chains=chains, cores=1, random_seed=1)
    for label, idata in (("DilationLangevin", dilation), ("NUTS", nuts)):
        right = (np.asarray(idata.posterior["x"]) > 4.0).mean(axis=1)
        print(f"{label}: chains in the far mode (x > 4): {int((right > 0.5).sum())}/{chains}")
    print(az.summary(dilation, var_names=["x"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="small run (used by the tests)")
    main(parser.parse_args().fast)
