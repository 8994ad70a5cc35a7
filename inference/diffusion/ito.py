"""Itô density estimator: running ``log q_t(x_t)`` along a reverse SDE from its own scores.

SuperDiff (Skreta, Atanackovic, Bose, Tong & Neklyudov 2025, "The Superposition of Diffusion
Models Using the Itô Density Estimator", ICLR, Thm 1, eq. 13). Let the forward SDE be
``dx = f_t(x) dt + g_t dW`` (``f_t(x) = lambda_t x``, :mod:`inference.diffusion.sde`) with
marginals ``q_t`` and score ``s_t = grad log q_t``. Run time backwards, ``tau = t_max - t``,
along *any* reverse process

    dx_tau = u(x_tau, tau) dtau + g_{t} dW_bar,                 (diffusion must equal g)

with an arbitrary drift ``u`` (the model's own reverse drift, another model's, a mixture of
drifts as in SuperDiff, or an FKC drift with target-score noise). Itô's formula together with
the forward Fokker-Planck equation ``d_t log q = -div f - <f, s> + g^2/2 (div s + |s|^2)``
gives (the ``div s`` terms cancel because the noise is exactly ``g``)

    d log q_{t}(x_tau) = <dx_tau, s> + ( div f + <f - g^2/2 s, s> ) dtau .        (eq. 13)

Only the score already evaluated for the drift and the constant ``div f = d lambda_t`` are
needed: no Jacobian, divergence or Hutchinson estimate. The Euler discretisation used here
evaluates ``s``, ``f``, ``g`` at the left point ``(t_k, x_k)`` and uses ``dx = x_{k+1} - x_k``
with ``dtau = h_k = t_k - t_{k+1}``; its per-step error has mean ``o(h)`` and variance
``h^2 g^4/4 Var(eps^T Hess log q eps)`` (SuperDiff Thm 3), so the end-point error has mean
``O(h)`` and standard deviation ``O(sqrt(h))``.

The estimate starts from ``log q_{t_max}(x_{t_max})``: the exact value when the model's noised
log-density is known (analytic mixtures), else the SDE's Gaussian reference
:meth:`SDE.prior_logpdf` (the usual ``q_{t_max} ~= p_T`` approximation).

Convention: score functions are batch functions ``score_fn(x (N, d), t) -> (N, d)``; several
models' scores are stacked as ``(M, N, d)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import Array

from inference import rng

from .sde import SDE

__all__ = ["ito_increment", "ito_log_density"]


def ito_increment(sde: SDE, x: Array, x_next: Array, scores: Array, t, h) -> Array:
    """Increment of ``log q^i`` over one reverse step (SuperDiff eq. 13, left point).

    Args:
        sde: forward SDE (supplies ``f``, ``g`` and ``div f``).
        x: ``(N, d)`` particles at time ``t``.
        x_next: ``(N, d)`` particles after the step to ``t - h`` (produced with noise ``g(t)``).
        scores: ``(..., N, d)`` scores ``s^i(x, t)`` of any number of models (leading axes).
        t: current forward time ``t_k``.
        h: step size ``t_k - t_{k+1} > 0``.

    Returns:
        ``(..., N)``: ``<x_next - x, s> + h (div f + <f - g^2/2 s, s>)``.
    """
    d = x.shape[-1]
    f = sde.drift(x, t)
    g2 = sde.diffusion(t) ** 2
    div_f = sde.drift_divergence(t, d)
    dx = x_next - x
    return jnp.sum(dx * scores, axis=-1) + h * (
        div_f + jnp.sum((f - 0.5 * g2 * scores) * scores, axis=-1)
    )


def ito_log_density(
    key: Array,
    score_fns: Sequence[Callable],
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    mix: Array | Callable | None = None,
    log_q_T: Array | None = None,
) -> tuple[Array, Array]:
    """Simulate a reverse SDE and track ``log q^i_t(x_t)`` for every model by eq. 13.

    The drift is the mixture of the models' reverse drifts ``u = -f + g^2 sum_j kappa_j s^j``
    with noise ``g`` (SuperDiff Prop. 3 form), ``kappa = mix`` (``(M,)`` weights summing to
    one, default: model 0 only) or ``kappa = mix(log_q (M, N)) -> (N, M)`` (e.g. SuperDiff OR).
    The same score evaluations feed the drift and the density updates: one call per model and
    step. No final noise-free step (the estimator needs the noise to be ``g``).

    Args:
        key: PRNG key.
        score_fns: ``M`` batch score functions ``(N, d), t -> (N, d)``.
        sde: the common forward SDE.
        x_T: ``(N, d)`` start points at ``time_grid[0]``.
        time_grid: decreasing times ``t_0 = t_max > ... > t_K``.
        mix: see above.
        log_q_T: ``(M, N)`` initial values; default ``sde.prior_logpdf(x_T)`` for every model.

    Returns:
        ``(x, log_q)``: end points ``(N, d)`` and estimates ``(M, N)`` of ``log q^i_{t_K}(x)``.
    """
    m = len(score_fns)
    grid = jnp.asarray(time_grid, x_T.dtype)
    if log_q_T is None:
        log_q_T = jnp.broadcast_to(sde.prior_logpdf(x_T), (m, x_T.shape[0]))
    if mix is None:
        mix = jnp.zeros((m,), x_T.dtype).at[0].set(1.0)

    def body(carry, inp):
        x, ell = carry
        k, t, t_next = inp
        h = t - t_next
        s = jnp.stack([fn(x, t) for fn in score_fns])
        kappa = mix(ell) if callable(mix) else jnp.broadcast_to(mix, (x.shape[0], m))
        g = sde.diffusion(t)
        drift = -sde.drift(x, t) + g**2 * jnp.einsum("nm,mnd->nd", kappa, s)
        z = rng.normal(k, x.shape, x.dtype)
        x_next = x + h * drift + g * jnp.sqrt(h) * z
        ell = ell + ito_increment(sde, x, x_next, s, t, h)
        return (x_next, ell), None

    keys = jax.random.split(key, grid.shape[0] - 1)
    (x, ell), _ = jax.lax.scan(body, (x_T, log_q_T), (keys, grid[:-1], grid[1:]))
    return x, ell
