"""Small pure-JAX ODE integrators on pytrees: fixed-grid Euler/Heun/RK4 and adaptive
Dormand-Prince 5(4).

``fn(t, y) -> dy/dt`` where ``y`` is any pytree of arrays. Fixed-grid solvers take a 1-d
``grid`` of times (increasing or decreasing) and run one ``lax.scan``; the adaptive solver is
one ``lax.while_loop``, so everything is ``jit``/``vmap``-able without host callbacks.

Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae", J. Comp. Appl. Math. 6;
Butcher tableau and the step-size rule ``h_new = h * clip(0.9 err^(-1/5), 0.2, 10)`` with the
mixed error norm ``err = rms(e / (atol + rtol max(|y_n|, |y_{n+1}|)))`` as in Hairer, Norsett &
Wanner, "Solving ODEs I", Sec. II.4-5. First Same As Last (FSAL): the seventh stage of an
accepted step is the first of the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["odeint_grid", "odeint_dopri5", "Dopri5Info"]

_tmap = jax.tree_util.tree_map


def _axpy(y, h, *pairs):
    """``y + h * sum_i c_i k_i`` over pytrees; ``pairs`` are ``(c_i, k_i)``."""

    def comb(yl, *ks):
        acc = jnp.zeros_like(yl)
        for (c, _), kl in zip(pairs, ks, strict=True):
            if c != 0.0:
                acc = acc + c * kl
        return yl + h * acc

    return _tmap(comb, y, *[k for _, k in pairs])


def _step_euler(fn, t, h, y):
    return _axpy(y, h, (1.0, fn(t, y)))


def _step_heun(fn, t, h, y):
    k1 = fn(t, y)
    k2 = fn(t + h, _axpy(y, h, (1.0, k1)))
    return _axpy(y, h, (0.5, k1), (0.5, k2))


def _step_rk4(fn, t, h, y):
    k1 = fn(t, y)
    k2 = fn(t + 0.5 * h, _axpy(y, 0.5 * h, (1.0, k1)))
    k3 = fn(t + 0.5 * h, _axpy(y, 0.5 * h, (1.0, k2)))
    k4 = fn(t + h, _axpy(y, h, (1.0, k3)))
    return _axpy(y, h, (1 / 6, k1), (1 / 3, k2), (1 / 3, k3), (1 / 6, k4))


_FIXED = {"euler": _step_euler, "heun": _step_heun, "rk4": _step_rk4}


def odeint_grid(fn: Callable, y0, grid: Array, method: str = "heun", return_path: bool = False):
    """Integrate ``dy/dt = fn(t, y)`` along ``grid`` with a fixed-step method.

    ``method``: ``"euler"`` (order 1), ``"heun"`` (explicit trapezoid, order 2; Karras et al.
    2022 Alg. 1 without churn) or ``"rk4"`` (classical Runge-Kutta, order 4). Returns ``y`` at
    ``grid[-1]`` (and the path at every grid point if ``return_path``).
    """
    if method not in _FIXED:
        raise ValueError(f"method must be one of {sorted(_FIXED)}, got {method!r}")
    step = _FIXED[method]
    grid = jnp.asarray(grid)

    def body(y, ts):
        t0, t1 = ts
        y1 = step(fn, t0, t1 - t0, y)
        return y1, (y1 if return_path else None)

    y1, path = jax.lax.scan(body, y0, (grid[:-1], grid[1:]))
    if return_path:
        path = _tmap(lambda a, b: jnp.concatenate([a[None], b], axis=0), y0, path)
        return y1, path
    return y1


# Dormand-Prince 5(4) tableau.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


class Dopri5Info(NamedTuple):
    """Diagnostics of an adaptive solve: accepted/rejected steps, function evaluations, and
    whether ``t1`` was reached within ``max_steps``."""

    n_accepted: Array
    n_rejected: Array
    nfe: Array
    success: Array


def odeint_dopri5(
    fn: Callable,
    y0,
    t0,
    t1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    h0: float | None = None,
    max_steps: int = 10_000,
):
    """Adaptive Dormand-Prince 5(4) from ``t0`` to ``t1`` (either direction).

    Local extrapolation (the 5th-order solution is propagated). Returns ``(y(t1), info)``; if
    ``max_steps`` attempts are exhausted, ``info.success`` is False and ``y`` is the state
    reached so far.
    """
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    span = t1 - t0
    direction = jnp.sign(span)
    h_init = jnp.abs(span) * (0.01 if h0 is None else h0)

    def err_norm(y, y_new, e):
        leaves = zip(*(jax.tree_util.tree_leaves(u) for u in (y, y_new, e)), strict=True)
        sq, n = 0.0, 0
        for a, b, c in leaves:
            scale = atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))
            sq = sq + jnp.sum((c / scale) ** 2)
            n += c.size
        return jnp.sqrt(sq / n)

    k1 = fn(t0, y0)

    def cond(state):
        t, _, _, _, n_acc, n_rej = state
        return (direction * (t1 - t) > 1e-7 * jnp.abs(span)) & (n_acc + n_rej < max_steps)

    def body(state):
        t, y, k1, h, n_acc, n_rej = state
        h = jnp.minimum(h, jnp.abs(t1 - t))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = _axpy(y, hs, *zip(_A[i], ks, strict=True))
            ks.append(fn(t + _C[i] * hs, yi))
        y_new = _axpy(y, hs, *zip(_B5, ks, strict=True))
        e = _axpy(_tmap(jnp.zeros_like, y), hs, *zip(_E, ks, strict=True))
        err = err_norm(y, y_new, e)
        accept = err <= 1.0
        factor = jnp.clip(0.9 * jnp.where(err > 0, err, 1e-10) ** (-0.2), 0.2, 10.0)
        sel = lambda a, b: _tmap(lambda u, v: jnp.where(accept, u, v), a, b)  # noqa: E731
        t_new = jnp.where(accept, t + hs, t)
        return (
            t_new,
            sel(y_new, y),
            sel(ks[6], k1),
            h * factor,
            n_acc + accept.astype(jnp.int32),
            n_rej + (~accept).astype(jnp.int32),
        )

    init = (t0, y0, k1, h_init, jnp.int32(0), jnp.int32(0))
    t_end, y_end, _, _, n_acc, n_rej = jax.lax.while_loop(cond, body, init)
    success = direction * (t1 - t_end) <= 1e-7 * jnp.abs(span)
    info = Dopri5Info(n_acc, n_rej, 1 + 6 * (n_acc + n_rej), success)
    return y_end, info
