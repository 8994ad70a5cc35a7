"""Pure-JAX inference algorithms: MCMC kernels, the SMC engine, diffusion samplers.

Nothing here knows about models, numpyro, ArviZ or files; every algorithm is a pair of pure
functions (``init``/``step``) on arrays and pytrees, jit- and vmap-able.
"""

from inference.mcmc import HMC, MALA, NUTS, RWMH

__all__ = ["HMC", "MALA", "NUTS", "RWMH"]
