"""``python -m benchmarks COMMAND ...``: the project's benchmarks.

Commands:

- ``run``: samplers x targets table in Markdown and JSON (:mod:`benchmarks.runner`);
- ``paper``: dilation vs plain and geometric-path Langevin at one gradient budget
  (:mod:`benchmarks.paper_comparison`);
- ``eight-schools``: DilationLangevin's steps per draw vs NUTS and nutpie
  (:mod:`benchmarks.eight_schools`);
- ``check-ports``: the posteriordb ports against their references with NUTS
  (:mod:`benchmarks.check_ports`);
- ``end-to-end``: the whole ``pm.sample`` call, cold and warm, DilationLangevin vs NUTS vs
  nutpie on the ports and held-out regressions (:mod:`benchmarks.end_to_end`);
- ``fixed-costs``: a DilationLangevin call's seconds per stage, cold and warm
  (:mod:`benchmarks.fixed_costs`);
- ``chain-seeds``: DilationLangevin chains on many seeds of multimodal targets, chain by
  chain (:mod:`benchmarks.chain_seeds`);
- ``population-cost``: the tuning population's seconds and gradients per chain, with and
  without the probe (:mod:`benchmarks.population_cost`);
- ``mixtures``: two-mode Gaussian mixtures in 20 to 200 dimensions, both samplers against
  ``pm.sample_smc`` (:mod:`benchmarks.mixtures`);
- ``mode-misses``: how often a DilationLangevin chain's map lacks a mixture's second mode,
  over many seeds (:mod:`benchmarks.mode_misses`);
- ``funnels``: centered hierarchies, Neal's funnel, centered eight schools and radon, both
  samplers against PyMC's NUTS as written and non-centered (:mod:`benchmarks.funnels`);
- ``symmetric``: posteriors with symmetric copies of their modes (a Flat-prior squared
  likelihood, label-switching mixtures, a factor model), both samplers against NUTS and
  ``pm.sample_smc`` (:mod:`benchmarks.symmetric`);
- ``products``: products of 8-16 double wells (``2^k`` modes), per-factor shares and log Z,
  both samplers against ``pm.sample_smc`` (:mod:`benchmarks.products`);
- ``ppca``: probabilistic PCA (factor model, 521 parameters), DilationLangevin against
  nutpie (:mod:`benchmarks.ppca`);
- ``unimodal-overhead``: DilationLangevin against itself without the mode map on unimodal
  posteriors (:mod:`benchmarks.unimodal_overhead`);
- ``trajectory-length``: DilationLangevin configurations against each other, warm, over
  targets and seeds (:mod:`benchmarks.trajectory_length`);
- ``tuning-divergences``: where DilationLangevin's trajectories diverge, per adaptation
  window and after tuning (:mod:`benchmarks.tuning_divergences`);
- ``metric-cost``: what one corrected preconditioner direction costs a leapfrog step, against
  the model's gradient (:mod:`benchmarks.metric_cost`).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": "benchmarks.runner",
    "paper": "benchmarks.paper_comparison",
    "eight-schools": "benchmarks.eight_schools",
    "check-ports": "benchmarks.check_ports",
    "end-to-end": "benchmarks.end_to_end",
    "fixed-costs": "benchmarks.fixed_costs",
    "chain-seeds": "benchmarks.chain_seeds",
    "population-cost": "benchmarks.population_cost",
    "unimodal-overhead": "benchmarks.unimodal_overhead",
    "mixtures": "benchmarks.mixtures",
    "mode-misses": "benchmarks.mode_misses",
    "funnels": "benchmarks.funnels",
    "symmetric": "benchmarks.symmetric",
    "products": "benchmarks.products",
    "ppca": "benchmarks.ppca",
    "trajectory-length": "benchmarks.trajectory_length",
    "tuning-divergences": "benchmarks.tuning_divergences",
    "metric-cost": "benchmarks.metric_cost",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
