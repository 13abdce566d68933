"""The engine: arrays in, arrays out; it imports nothing of PyMC.

One module per stage of the algorithm: :mod:`~pymc_dilation.engine.path` (the dilation path),
:mod:`~pymc_dilation.engine.schedules` (λ schedules), :mod:`~pymc_dilation.engine.kernels`
(Langevin proposals and their Metropolis correction), :mod:`~pymc_dilation.engine.adaptation`
(step size and preconditioner), :mod:`~pymc_dilation.engine.laplace` (whitening),
:mod:`~pymc_dilation.engine.explore` (particles annealed along their own paths),
:mod:`~pymc_dilation.engine.modes` (the mode map), :mod:`~pymc_dilation.engine.weights` (mode
weights, evidence and exact jumps), :mod:`~pymc_dilation.engine.tempering` (sequential Monte
Carlo from the map to the target, where importance weights fail) and
:mod:`~pymc_dilation.engine.population` (the stages chained into one run).
"""
