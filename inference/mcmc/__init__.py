"""MCMC kernels on flat position vectors, their warm-up adaptation, and kernel objects.

Every kernel is ``init(position, logdensity_fn) -> State`` and
``step(key, state, logdensity_fn, step_size, inverse_mass_matrix, **static) -> (State, Info)``
(modules :mod:`~inference.mcmc.rwmh`, :mod:`~inference.mcmc.mala`, :mod:`~inference.mcmc.hmc`,
:mod:`~inference.mcmc.nuts`); :mod:`~inference.mcmc.adaptation` holds the one-chain warm-up
and :mod:`~inference.mcmc.kernels` the configuration objects.
"""

from inference.mcmc import adaptation, hmc, integrators, mala, metrics, nuts, rwmh
from inference.mcmc.adaptation import (
    WarmupState,
    find_reasonable_step_size,
    warmup_final,
    warmup_init,
    warmup_step,
    window_schedule,
)
from inference.mcmc.base import Info, State, init
from inference.mcmc.kernels import HMC, MALA, NUTS, RWMH, get_kernel

__all__ = [
    "HMC",
    "MALA",
    "NUTS",
    "RWMH",
    "Info",
    "State",
    "WarmupState",
    "adaptation",
    "find_reasonable_step_size",
    "get_kernel",
    "hmc",
    "init",
    "integrators",
    "mala",
    "metrics",
    "nuts",
    "rwmh",
    "warmup_final",
    "warmup_init",
    "warmup_step",
    "window_schedule",
]
