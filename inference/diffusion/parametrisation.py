"""Conversions between score, noise (epsilon) and denoiser (x0) parametrisations.

With ``x_t = alpha_t x_0 + sigma_t eps`` (see :mod:`inference.diffusion.sde`):

* score from noise prediction: ``s = -eps_hat / sigma_t`` (Song et al. 2021, App. C; Ho et al.
  2020 eq. 11 rewritten as a score);
* Tweedie's formula (Efron 2011; Song et al. 2021; Karras et al. 2022 eq. 3 for ``alpha = 1``):
  ``E[x_0 | x_t] = (x_t + sigma_t^2 s(x_t, t)) / alpha_t``;
* score from a denoiser ``D(x_t) = E[x_0 | x_t]``: ``s = (alpha_t D - x_t) / sigma_t^2``;
* noise from denoiser: ``eps_hat = (x_t - alpha_t D) / sigma_t``.

All functions are elementwise in ``x`` and take a scalar ``t``.
"""

from __future__ import annotations

from collections.abc import Callable

from jax import Array

from .sde import SDE

__all__ = [
    "score_to_eps",
    "eps_to_score",
    "score_to_x0",
    "x0_to_score",
    "eps_to_x0",
    "x0_to_eps",
    "tweedie",
    "score_fn_from_eps_fn",
    "score_fn_from_denoiser",
]


def eps_to_score(eps: Array, t, sde: SDE) -> Array:
    """``s = -eps / sigma_t``."""
    return -eps / sde.marginal_std(t)


def score_to_eps(score: Array, t, sde: SDE) -> Array:
    """``eps = -sigma_t s``."""
    return -sde.marginal_std(t) * score


def score_to_x0(x: Array, score: Array, t, sde: SDE) -> Array:
    """Tweedie: ``E[x_0 | x_t] = (x_t + sigma_t^2 s) / alpha_t``."""
    return (x + sde.marginal_std(t) ** 2 * score) / sde.marginal_mean_coeff(t)


tweedie = score_to_x0


def x0_to_score(x: Array, x0: Array, t, sde: SDE) -> Array:
    """``s = (alpha_t x0 - x_t) / sigma_t^2`` (inverse of Tweedie)."""
    return (sde.marginal_mean_coeff(t) * x0 - x) / sde.marginal_std(t) ** 2


def eps_to_x0(x: Array, eps: Array, t, sde: SDE) -> Array:
    """``x0 = (x_t - sigma_t eps) / alpha_t``."""
    return (x - sde.marginal_std(t) * eps) / sde.marginal_mean_coeff(t)


def x0_to_eps(x: Array, x0: Array, t, sde: SDE) -> Array:
    """``eps = (x_t - alpha_t x0) / sigma_t``."""
    return (x - sde.marginal_mean_coeff(t) * x0) / sde.marginal_std(t)


def score_fn_from_eps_fn(eps_fn: Callable, sde: SDE) -> Callable:
    """Wrap a noise predictor ``eps_fn(x, t)`` as ``score_fn(x, t) = -eps_fn(x, t) / sigma_t``."""

    def score_fn(x, t):
        return eps_to_score(eps_fn(x, t), t, sde)

    return score_fn


def score_fn_from_denoiser(denoiser: Callable, sde: SDE) -> Callable:
    """Wrap a denoiser ``D(x, t) ~ E[x_0|x_t]`` as ``score_fn(x, t) = (alpha D - x)/sigma^2``."""

    def score_fn(x, t):
        return x0_to_score(x, denoiser(x, t), t, sde)

    return score_fn
