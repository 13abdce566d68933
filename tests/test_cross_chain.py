"""Checks across the chains of one pm.sample call (issue 24, item 6)."""

import numpy as np
import pymc as pm

from pymc_dilation import DilationLangevin
from pymc_dilation.cross_chain import ChainSummary, disagreements, run_registry, visited_modes

SAMPLE = dict(cores=1, progressbar=False, compute_convergence_checks=False)


def _summary(chain, n_modes=1, mean=-10.0, sd=1.0, dim=2):
    return ChainSummary(chain, n_modes, mean, sd, 100, dim)


def test_disagreements_name_maps_and_log_densities_that_differ():
    mine = _summary("0")
    assert disagreements(mine, [_summary("1", mean=-10.5)]) == {}
    maps = disagreements(mine, [_summary("1", n_modes=2)])
    assert list(maps) == ["1"] and "visit different modes: chain 0 1, chain 1 2" in maps["1"]
    assert visited_modes(np.array([95.0, 4.0, 1.0])) == 1  # a mode it hardly visits
    assert visited_modes(np.array([60.0, 40.0])) == 2
    # Maps of many small modes differ by a few from chain to chain: not reported.
    assert disagreements(_summary("0", n_modes=22), [_summary("1", n_modes=32)]) == {}
    assert disagreements(_summary("0", n_modes=10), [_summary("1", n_modes=20)])
    far = disagreements(mine, [_summary("1", mean=-1560.0, sd=16.0)])
    assert "chain 1's draws have a log density 1550.0 below chain 0's" in far["1"]
    # Sds scale the gap: 5 nats apart is far for sds of 1, not for sds of 16.
    assert disagreements(mine, [_summary("1", mean=-15.0)])
    assert not disagreements(_summary("0", sd=16.0), [_summary("1", mean=-15.0, sd=16.0)])


def test_the_chains_of_one_run_share_a_registry_and_other_runs_do_not(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, second = np.random.default_rng(5).spawn(2)
    zero, one = run_registry(first, ("model",)), run_registry(second, ("model",))
    assert zero.directory == one.directory and (zero.label, one.label) == ("0", "1")
    assert run_registry(np.random.default_rng(6).spawn(1)[0], ("model",)).directory != (
        zero.directory
    )
    assert run_registry(first, ("another model",)).directory != zero.directory
    assert run_registry(np.random.default_rng(5), ("model",)) is None  # not spawned
    zero.publish(_summary("0"))
    assert one.others() == [_summary("0")] and zero.others() == []


def _two_heights():
    """Two modes of equal mass at -6 (sd 0.01) and +6 (sd 3): log densities log 300 = 5.7
    nats apart, 6 times the 0.6-1.0 sd of a chain's log density here (a 1-D posterior's is
    0.7). With sd 0.1, 3.4 nats apart, a chain's sample sd of 0.9 over 100 draws put the gap
    under the 4 sds that are reported, on one machine's rounding and not on another's."""
    with pm.Model() as model:
        x = pm.Normal("x", 0.0, 10.0)
        components = pm.math.stack(
            [
                np.log(0.5) + pm.logp(pm.Normal.dist(-6.0, 0.01), x),
                np.log(0.5) + pm.logp(pm.Normal.dist(6.0, 3.0), x),
            ]
        )
        pm.Potential("mixture", pm.math.logsumexp(components))
    return model


def test_chains_in_different_modes_warn_through_pm_sample(pymc_messages):
    # Without jumps each chain stays in the mode it was resampled into: the chains' log
    # densities differ by 5.7 nats, and pm.sample says so (it used to need check_mode_maps).
    # Which modes four chains land in depends on the seed (and on a machine's rounding), so
    # seeds are tried until one run has chains in both.
    split = 0
    for seed in range(2, 10):
        pymc_messages.clear()
        with _two_heights():
            idata = pm.sample(
                draws=200, tune=200, chains=4, random_seed=seed,
                step=DilationLangevin(mode_jumps=False), **SAMPLE,
            )  # fmt: skip
        right = (np.asarray(idata.posterior["x"]) > -3.0).mean(axis=1)  # the wide mode
        assert np.all((right < 0.02) | (right > 0.98)), right  # no chain crosses
        if 0 < np.round(right).sum() < 4:
            split += 1
            assert any("the chains sample different regions" in m for m in pymc_messages), (
                seed,
                pymc_messages,
            )
            break
    assert split, "no seed put the chains in both modes"
    # With jumps the chains mix and nothing is said.
    pymc_messages.clear()
    with _two_heights():
        pm.sample(
            draws=200, tune=200, chains=4, random_seed=2,
            step=DilationLangevin(mode_jumps=True), **SAMPLE,
        )  # fmt: skip
    assert not [m for m in pymc_messages if "the chains sample different regions" in m]


def test_parallel_chains_find_each_other(pymc_messages):
    # cores=2: the chains run in processes of their own and meet in the run's directory.
    # Seeds are tried until the two chains hold one mode each (see the test above).
    for seed in range(6, 14):
        pymc_messages.clear()
        with _two_heights():
            idata = pm.sample(
                draws=300, tune=200, chains=2, random_seed=seed,
                step=DilationLangevin(mode_jumps=False), **{**SAMPLE, "cores": 2},
            )  # fmt: skip
        right = (np.asarray(idata.posterior["x"]) > -3.0).mean(axis=1)
        if sorted(np.round(right)) == [0.0, 1.0]:
            break
    assert sorted(np.round(right)) == [0.0, 1.0], right
    assert any("the chains sample different regions" in m for m in pymc_messages), pymc_messages
