"""Pieces shared by the diffusion posterior samplers: the reverse (DDIM/DDPM) kernel that
defines the model prior ``p_theta``, Gaussian log-densities and the SW1 metric.

**Model prior.** All consistent samplers here target ``p_theta(x_{t_K} | y) ∝ p_theta(x_{t_K})
p(y | x_{t_K})``, where ``p_theta`` is the law of the final state of the reverse chain on a
decreasing time grid ``t_0 = t_max > t_1 > ... > t_K = t_min``:
``x_{t_0} ~ N(0, rho^2 I)`` (the SDE's reference) and, for each step ``t -> t'``, the DDIM(eta)
kernel (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", ICLR, eq. 12 and
eq. 16), written for a general linear SDE ``x_t | x_0 ~ N(a_t x_0, s_t^2 I)``:

    x0_hat = (x + s_t^2 score(x, t)) / a_t          (Tweedie),
    eps_hat = -s_t score(x, t),
    c^2 = eta^2 (s_{t'}^2 / s_t^2) (s_t^2 - (a_t / a_{t'})^2 s_{t'}^2),
    p_theta(x' | x) = N(x'; a_{t'} x0_hat + sqrt(s_{t'}^2 - c^2) eps_hat, c^2 I).

``eta = 1`` is the DDPM ancestral kernel (``c^2`` is the variance of ``q(x_{t'} | x_t, x_0)``,
Ho et al. 2020, eq. 7); the samplers need ``eta > 0`` because the twisted proposals and the
weights use the kernel's density.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array

from inference import rng
from inference.diffusion.samplers import time_grid
from inference.diffusion.sde import SDE

__all__ = [
    "ddim_kernel",
    "tweedie",
    "normal_logpdf",
    "sliced_wasserstein_1",
    "default_grid",
]


def default_grid(sde: SDE, steps: int, kind: str | None = None) -> Array:
    """A decreasing grid of ``steps + 1`` times from ``t_max`` to ``t_min``
    (:func:`inference.diffusion.samplers.time_grid`), ``kind`` defaulting to the SDE's:
    uniform, or EDM's for ``EDMSDE``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return time_grid(sde, steps, kind)


def tweedie(sde: SDE, x: Array, score: Array, t) -> Array:
    """``E[x_0 | x_t] = (x_t + s_t^2 score) / a_t`` (Efron 2011; Chung et al. 2023, eq. 8)."""
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    return (x + s**2 * score) / a


def ddim_kernel(sde: SDE, x: Array, score: Array, t, t_next, eta: float = 1.0):
    """Mean and standard deviation ``(m, c)`` of the DDIM(eta) kernel ``t -> t_next``
    (module docstring); ``x`` and ``score`` of shape ``(..., d)``, ``c`` a scalar."""
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    a1, s1 = sde.marginal_mean_coeff(t_next), sde.marginal_std(t_next)
    x0 = (x + s**2 * score) / a
    eps = -s * score
    var_fwd = jnp.maximum(s**2 - (a / a1) ** 2 * s1**2, 0.0)
    c2 = eta**2 * (s1**2 / s**2) * var_fwd
    mean = a1 * x0 + jnp.sqrt(jnp.maximum(s1**2 - c2, 0.0)) * eps
    return mean, jnp.sqrt(c2)


def normal_logpdf(x: Array, mean, var) -> Array:
    """Elementwise ``log N(x; mean, var)`` (no sum)."""
    return -0.5 * (x - mean) ** 2 / var - 0.5 * jnp.log(2 * math.pi * var)


def sliced_wasserstein_1(key: Array, x: Array, y: Array, num_projections: int = 100) -> Array:
    """Sliced Wasserstein-1 as in the MCGdiff benchmark (Cardoso et al. 2024, Sec. 5.1): the
    mean over ``num_projections`` random unit directions of the 1-d ``W_1`` between the
    projected samples (equal sizes: mean absolute difference of the sorted projections)."""
    x = jnp.asarray(x)
    y = jnp.asarray(y, x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}")
    u = rng.normal(key, (num_projections, x.shape[1]), x.dtype)
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    px = jnp.sort(x @ u.T, axis=0)
    py = jnp.sort(y @ u.T, axis=0)
    return jnp.mean(jnp.abs(px - py))
