"""Diffusion Posterior Sampling (DPS): the cheap, *biased* heuristic baseline.

Chung, Kim, Mccann, Klasky & Ye 2023, "Diffusion Posterior Sampling for General Noisy Inverse
Problems", ICLR (arXiv:2209.14687), Algorithm 1: after each ancestral step
``x' ~ N(m(x), c^2 I)`` (here the DDIM(eta) kernel of :mod:`.common`),

    x' <- x' - zeta_t grad_x || y - A(x0_hat(x)) ||^2,     zeta_t = zeta' / || y - A(x0_hat(x)) ||

(the step normalisation of the paper's App. C.2). With a ``residual_fn(x0) = y - A(x0)`` this is
implemented literally; for a general likelihood (no residual) the step is
``x' <- x' + zeta' grad_x log p(y | x0_hat(x))``.

DPS approximates ``p(y | x_t)`` by ``p(y | x0_hat(x_t))`` and uses an ad-hoc step, with no
weights: it is **not** a consistent posterior sampler and it mis-allocates mass between modes
(the tests and ``bench/mcgdiff_gmm.py`` measure this). It is written as a Feynman-Kac model with
zero log-potentials, to be run with ``ess_threshold=0`` (never resample): ``N`` independent
one-particle runs. Its ``log_evidence`` is meaningless (always 0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from inference import rng
from inference.diffusion.sde import SDE
from inference.smc.engine import FeynmanKac, SMCResult, run

from .common import ddim_kernel, default_grid

__all__ = ["dps", "sample_dps"]


def dps(
    score_fn,
    sde: SDE,
    log_lik_fn: Callable,
    grid: Array,
    dim: int,
    scale: float = 1.0,
    eta: float = 1.0,
    residual_fn: Callable | None = None,
) -> FeynmanKac:
    """DPS as a weightless :class:`~inference.smc.engine.FeynmanKac` model (module docstring).

    Args:
        score_fn, sde, grid, dim, eta: as in :func:`.tds.tds`.
        log_lik_fn: ``log p(y | x)`` for one ``x`` (used when ``residual_fn`` is None).
        scale: ``zeta'``.
        residual_fn: ``residual_fn(x0) -> y - A(x0)`` (vector) for the paper's normalised step.
    """

    def energy(xi, t):
        score = score_fn(xi[None], t)[0]
        x0 = (xi + sde.marginal_std(t) ** 2 * score) / sde.marginal_mean_coeff(t)
        if residual_fn is None:
            return -log_lik_fn(x0), score
        # zeta'/||r|| * grad ||r||^2 = 2 zeta' grad ||r||
        r = residual_fn(x0)
        return 2.0 * jnp.sqrt(jnp.sum(r**2) + 1e-30), score

    def init(key, n):
        return sde.prior_std * rng.normal(key, (n, dim)), jnp.zeros((n,))

    def step(key, x, k):
        t, t1 = grid[k], grid[k + 1]
        (_, score), grad = jax.vmap(jax.value_and_grad(lambda xi: energy(xi, t), has_aux=True))(x)
        m, c = ddim_kernel(sde, x, score, t, t1, eta)
        x_new = m + c * rng.normal(key, x.shape, x.dtype) - scale * grad
        return x_new, jnp.zeros(x.shape[0], x.dtype), ()

    return FeynmanKac(init, step)


def sample_dps(
    key: Array,
    score_fn,
    sde: SDE,
    log_lik_fn: Callable,
    dim: int,
    num_particles: int,
    steps: int = 100,
    scale: float = 1.0,
    eta: float = 1.0,
    residual_fn: Callable | None = None,
) -> SMCResult:
    """``num_particles`` independent DPS draws (engine with ``ess_threshold=0``)."""
    grid = default_grid(sde, steps)
    fk = dps(score_fn, sde, log_lik_fn, grid, dim, scale, eta, residual_fn)
    return run(key, fk, num_particles, steps, ess_threshold=0.0)
