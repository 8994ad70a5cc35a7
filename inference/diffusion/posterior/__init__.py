"""Posterior sampling for inverse problems with diffusion-model priors, each method a thin
Feynman-Kac adapter on the one SMC engine (:mod:`inference.smc.engine`):

* :mod:`.mcgdiff`: MCGdiff (Cardoso et al. 2024), gradient-free, linear-Gaussian observations;
* :mod:`.tds`: Twisted Diffusion Sampler (Wu et al. 2023), any differentiable likelihood;
* :mod:`.afdps`: AFDPS (Chen et al. 2025), weighted particles along the modified posterior PDE;
* :mod:`.dps`: DPS (Chung et al. 2023), the biased one-particle baseline.
"""

from .afdps import afdps, sample_afdps
from .common import ddim_kernel, default_grid, sliced_wasserstein_1, tweedie
from .dps import dps, sample_dps
from .mcgdiff import mcgdiff, mcgdiff_grid, sample_mcgdiff, svd_observation
from .tds import gaussian_twist, sample_tds, tds

__all__ = [
    "afdps",
    "sample_afdps",
    "ddim_kernel",
    "default_grid",
    "sliced_wasserstein_1",
    "tweedie",
    "dps",
    "sample_dps",
    "mcgdiff",
    "mcgdiff_grid",
    "sample_mcgdiff",
    "svd_observation",
    "gaussian_twist",
    "sample_tds",
    "tds",
]
