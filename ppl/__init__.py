"""ppl: probabilistic programs on JAX, with MCMC, SMC and diffusion-model backends.

Models are Python functions using numpyro's primitives (re-exported here); a plain numpyro
model runs unchanged.
"""

from numpyro import deterministic, factor, plate, sample

__version__ = "0.1.0"

from ppl.compose import anneal, geometric, guided, product, superpose  # noqa: E402
from ppl.diffusion import DiffusionPrior, sample_diffusion  # noqa: E402
from ppl.mcmc_sampler import mcmc  # noqa: E402
from ppl.posterior import Posterior  # noqa: E402
from ppl.predictive import predictive  # noqa: E402
from ppl.smc import smc  # noqa: E402
from ppl.state_space import (  # noqa: E402
    StateSpaceModel,
    log_likelihood_estimates,
    particle_filter,
    pmmh,
)

__all__ = [
    "DiffusionPrior",
    "Posterior",
    "StateSpaceModel",
    "anneal",
    "geometric",
    "guided",
    "product",
    "superpose",
    "log_likelihood_estimates",
    "particle_filter",
    "pmmh",
    "deterministic",
    "factor",
    "mcmc",
    "plate",
    "predictive",
    "sample",
    "sample_diffusion",
    "smc",
]
