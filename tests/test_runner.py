"""The benchmark runner keeps going when a sampler cannot run on a target, and says why."""

from benchmarks import runner


def test_a_failing_pair_is_recorded_and_the_run_goes_on(monkeypatch):
    def fake_run_one(target, sampler, settings, seed):
        if sampler == "smc":
            raise NotImplementedError("Cannot sample from flat variable\nmore detail")
        metrics = dict(wall_s=2.0, tv=0.1, min_ess_bulk=10.0, ess_per_s=5.0, n_grad=1.0)
        return {"target": target, "sampler": sampler, "seed": seed, **metrics}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    results = runner.run_benchmarks(
        ["mix2d"], ["nuts", "smc", "dilation"], runner.RunSettings(), log=lambda _: None
    )
    assert [r["sampler"] for r in results] == ["nuts", "smc", "dilation"]
    assert results[1]["not_run"] == "NotImplementedError: Cannot sample from flat variable"
    assert results[2]["wall_vs_nuts"] == 1.0 and "wall_vs_smc" not in results[2]
    table = runner.markdown_table(results)
    assert "not run" in table and "Cannot sample from flat variable" in table
