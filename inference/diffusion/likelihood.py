"""Log densities of a score model through the probability-flow ODE.

The probability-flow ODE ``dx/dt = f_tilde(x, t) = f(x, t) - g(t)^2 s(x, t) / 2`` (Song et al.
2021, eq. 13) transports ``p_{t0}`` to ``p_{t1}``; by the instantaneous change of variables
(Chen et al. 2018, "Neural Ordinary Differential Equations", Thm. 1; Song et al. 2021, eq. 39)

    log p_{t0}(x) = log p_{t1}(x_{t1}) + int_{t0}^{t1} div_x f_tilde(x_t, t) dt,

with ``x_t`` the ODE solution started at ``x_{t0} = x``. The state is augmented with the running
integral and both are solved together (forward in t, from data to noise).

``div f_tilde = d lambda(t) - g(t)^2/2 div s``. ``div s`` is either

* ``"exact"``: ``tr(ds/dx)`` from ``d`` forward-mode JVPs with the unit vectors (one per
  coordinate, all particles at once) -- cost ``d`` score evaluations;
* ``"hutchinson"``: ``eps^T (ds/dx) eps`` with one probe ``eps`` per particle, Rademacher or
  standard Gaussian, held fixed along the trajectory (Hutchinson 1990; Grathwohl et al. 2019,
  "FFJORD", eq. 7). Unbiased for ``log p`` given the exact ODE solution; cost 1 JVP.

Both rely on the batch convention of :mod:`inference.diffusion.samplers`: ``score_fn(x, t)``
acts row by row, so the batch Jacobian is block diagonal.

``log p_{t1}`` defaults to the SDE's Gaussian reference ``sde.prior_logpdf``, which is only
approximately the true ``p_{t1}`` (an ``O(alpha_T^2)`` bias for VP); pass the exact one
(``prior_logpdf=``) when it is known, as the tests do. The result is the density at ``t0``
(default ``sde.t_min``), i.e. of the slightly noised data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from inference import rng

from .ode import odeint_dopri5, odeint_grid
from .samplers import pf_ode_drift
from .sde import SDE, check_time

__all__ = ["divergence_exact", "divergence_hutchinson", "ode_log_prob", "LogProbInfo"]


def divergence_exact(fn: Callable, x: Array, t) -> Array:
    """``tr(d fn / dx)`` per row of ``x`` (N, d), from ``d`` JVPs with basis vectors."""
    d = x.shape[-1]
    eye = jnp.eye(d, dtype=x.dtype)

    def col(e):
        _, jv = jax.jvp(lambda y: fn(y, t), (x,), (jnp.broadcast_to(e, x.shape),))
        return jv  # (N, d): column J e for every particle

    cols = jax.vmap(col)(eye)  # (d, N, d)
    return jnp.einsum("jnj->n", cols)


def divergence_hutchinson(fn: Callable, x: Array, t, eps: Array) -> Array:
    """``eps_n^T (d fn / dx)_n eps_n`` per row (one JVP for all particles)."""
    _, jv = jax.jvp(lambda y: fn(y, t), (x,), (eps,))
    return jnp.sum(eps * jv, axis=-1)


class LogProbInfo(NamedTuple):
    """Pieces of the estimate: ``log_prob = prior_logp + delta_logp``; ``x_T`` the end point of
    the ODE; ``nfe`` the number of ODE right-hand-side evaluations (each costs ``d`` score JVPs
    with the exact trace, one with Hutchinson)."""

    prior_logp: Array
    delta_logp: Array
    x_T: Array
    nfe: Array


def ode_log_prob(
    score_fn: Callable,
    sde: SDE,
    x: Array,
    *,
    divergence: str = "exact",
    key: Array | None = None,
    probe: str = "rademacher",
    solver: str = "dopri5",
    steps: int = 200,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float | None = None,
    t1: float | None = None,
    prior_logpdf: Callable | None = None,
    return_info: bool = False,
):
    """Estimate ``log p_{t0}(x)`` for ``x`` of shape ``(N, d)`` via the probability-flow ODE.

    Args:
        divergence: ``"exact"`` or ``"hutchinson"`` (needs ``key``).
        probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes.
        solver: ``"dopri5"`` (adaptive, ``rtol``/``atol``) or a fixed-grid ``"rk4"``,
            ``"heun"``, ``"euler"`` with ``steps`` uniform steps.
        t0, t1: integration limits (default ``sde.t_min``, ``sde.t_max``).
        prior_logpdf: ``log p_{t1}`` as a batch function ``(N, d) -> (N,)``; default
            ``sde.prior_logpdf``.

    Returns ``(N,)`` log densities (and a :class:`LogProbInfo` if ``return_info``); NaN when
    the adaptive solver does not reach ``t1`` (``max_steps`` spent, or a non-finite score
    failing every step), as the estimate would be that of the wrong interval.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d); got {x.shape}")
    t0 = sde.t_min if t0 is None else t0
    t1 = sde.t_max if t1 is None else t1
    check_time(sde, t0, "t0")
    check_time(sde, t1, "t1")
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    n, d = x.shape
    drift = pf_ode_drift(score_fn, sde)
    if divergence == "hutchinson":
        if key is None:
            raise ValueError("divergence='hutchinson' needs a PRNG key")
        if probe == "rademacher":
            eps = jax.random.rademacher(key, (n, d), dtype=x.dtype)
        elif probe == "gaussian":
            eps = rng.normal(key, (n, d), dtype=x.dtype)
        else:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")

        def div(y, t):
            return divergence_hutchinson(drift, y, t, eps)

    else:

        def div(y, t):
            return divergence_exact(drift, y, t)

    def rhs(t, state):
        y, _ = state
        return drift(y, t), div(y, t)

    state0 = (x, jnp.zeros((n,), x.dtype))
    if solver == "dopri5":
        (x_T, delta), sinfo = odeint_dopri5(rhs, state0, t0, t1, rtol=rtol, atol=atol)
        delta = jnp.where(sinfo.success, delta, jnp.nan)
        nfe = sinfo.nfe
    else:
        grid = jnp.linspace(t0, t1, steps + 1).astype(x.dtype)
        x_T, delta = odeint_grid(rhs, state0, grid, solver)
        nfe = jnp.asarray({"euler": 1, "heun": 2, "rk4": 4}[solver] * steps)
    prior = sde.prior_logpdf if prior_logpdf is None else prior_logpdf
    prior_logp = prior(x_T)
    logp = prior_logp + delta
    if return_info:
        return logp, LogProbInfo(prior_logp, delta, x_T, nfe)
    return logp
