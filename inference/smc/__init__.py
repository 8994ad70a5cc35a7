"""The single SMC engine, its resamplers, particle filters, FFBS smoothing and tempering.

Every SMC method is a Feynman-Kac model (:class:`~inference.smc.engine.FeynmanKac`) run by
:func:`~inference.smc.engine.run`; see :mod:`inference.smc.engine`.
:mod:`~inference.smc.tempered` (adaptive tempering, which uses the :mod:`inference.mcmc`
kernels) is imported on first access.
"""

from inference.smc import engine, filters, resampling, smoothing
from inference.smc.engine import (
    FeynmanKac,
    SMCResult,
    check,
    ess,
    log_ess,
    normalize_log_weights,
    normalize_with_ess,
    resample_particles,
    run,
)
from inference.smc.filters import (
    FilterOutput,
    auxiliary_filter,
    auxiliary_fk,
    bootstrap_filter,
    bootstrap_fk,
    filter_from_fk,
    guided_filter,
    guided_fk,
)
from inference.smc.resampling import (
    RESAMPLERS,
    get_resampler,
    multinomial,
    residual,
    stratified,
    systematic,
)
from inference.smc.smoothing import ffbs

__all__ = [
    "RESAMPLERS",
    "FeynmanKac",
    "FilterOutput",
    "SMCResult",
    "auxiliary_filter",
    "auxiliary_fk",
    "bootstrap_filter",
    "bootstrap_fk",
    "check",
    "engine",
    "ess",
    "ffbs",
    "filter_from_fk",
    "filters",
    "get_resampler",
    "guided_filter",
    "guided_fk",
    "log_ess",
    "multinomial",
    "normalize_log_weights",
    "normalize_with_ess",
    "resample_particles",
    "resampling",
    "residual",
    "run",
    "smoothing",
    "stratified",
    "systematic",
    "tempered",
]


def __getattr__(name):
    # Lazy: tempered depends on inference.mcmc, which the engine and filters do not need.
    if name == "tempered":
        import importlib

        return importlib.import_module("inference.smc.tempered")
    raise AttributeError(f"module 'inference.smc' has no attribute {name!r}")
