"""Reverse-time samplers for score-based diffusion models.

Convention (used by every function in :mod:`inference.diffusion`): the score model is a
*batch* function ``score_fn(x, t) -> s`` with ``x`` of shape ``(N, d)`` (N particles), ``t`` a
scalar, and ``s`` of shape ``(N, d)`` approximating ``grad_x log p_t(x)`` row by row. Rows must
not interact (the likelihood's divergence relies on it).

Every sampler has the signature ``fn(key, score_fn, sde, x_T, time_grid, ...) -> x_0`` (or
``(x_0, trajectory)`` with ``return_trajectory=True``, the trajectory of shape
``(len(time_grid), N, d)``). ``time_grid`` is a decreasing 1-d array from ``sde.t_max`` to
``sde.t_min`` (see :func:`time_grid`); step ``k`` moves from ``t_k`` to ``t_{k+1}`` with
``h_k = t_k - t_{k+1} > 0``. The forward SDE is ``dx = f(x,t) dt + g(t) dW``
(:mod:`inference.diffusion.sde`).

* :func:`euler_maruyama` -- reverse SDE ``dx = [f - g^2 s] dt + g dW_bar`` (Song et al. 2021,
  eq. 6), discretised ``x' = x - h (f - g^2 s) + g sqrt(h) z``.
* :func:`predictor_corrector` -- Song et al. 2021 Alg. 1 / App. G: Langevin corrector with the
  signal-to-noise step rule followed by the Euler-Maruyama predictor.
* :func:`probability_flow_heun` / :func:`probability_flow_dopri5` -- the probability-flow ODE
  ``dx/dt = f - g^2 s / 2`` (Song et al. 2021, eq. 13) with Heun's method (Karras et al. 2022,
  Alg. 1) or adaptive Dormand-Prince 5(4).
* :func:`ddim` -- deterministic DDIM (Song, Meng & Ermon 2021, eq. 12 with ``eta = 0``):
  ``x' = alpha' x0_hat + sigma' eps_hat``, the exact solution of the probability-flow ODE when
  ``eps_hat`` is held fixed over the step (valid for VP, sub-VP, VE and EDM alike).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from inference import rng
from inference.smc.engine import check_unroll

from .ode import odeint_dopri5, odeint_grid
from .sde import SDE, check_time

__all__ = [
    "time_grid",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow_heun",
    "probability_flow_dopri5",
    "ddim",
    "pf_ode_drift",
    "reverse_sde_step",
    "SAMPLERS",
    "get_sampler",
    "sample",
]


def time_grid(sde: SDE, steps: int, kind: str | None = None, rho: float = 7.0) -> Array:
    """Decreasing grid of ``steps + 1`` times from ``sde.t_max`` to ``sde.t_min``.

    ``kind=None`` is the SDE's :attr:`SDE.default_grid`.

    ``"uniform"``: equally spaced in t. ``"edm"``: Karras et al. 2022, eq. 5, equally spaced in
    ``sigma^(1/rho)`` for the noise level ``sigma = sigma_t / alpha_t``,
    ``sigma_i = (sigma_max^(1/rho) + i/N (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, mapped
    back to t with :meth:`SDE.time_of_noise_level` (identity for :class:`EDMSDE`).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    kind = sde.default_grid if kind is None else kind
    if kind == "uniform":
        return jnp.linspace(sde.t_max, sde.t_min, steps + 1)
    if kind == "edm":
        s_max = sde.noise_level(sde.t_max) ** (1.0 / rho)
        s_min = sde.noise_level(sde.t_min) ** (1.0 / rho)
        i = jnp.arange(steps + 1) / steps
        sig = (s_max + i * (s_min - s_max)) ** rho
        grid = sde.time_of_noise_level(sig)
        # pin the end points exactly (the inverse map is exact only up to rounding)
        return grid.at[0].set(sde.t_max).at[-1].set(sde.t_min)
    raise ValueError(f"grid kind must be 'uniform' or 'edm', got {kind!r}")


def pf_ode_drift(score_fn: Callable, sde: SDE) -> Callable:
    """``f_tilde(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` (Song et al. 2021, eq. 13)."""

    def drift(x, t):
        return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(x, t)

    return drift


def _prepare(sde, x_T, grid):
    grid = jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"time_grid must be 1-d with at least 2 times; got shape {grid.shape}")
    check_time(sde, grid, "time_grid")
    x_T = jnp.asarray(x_T)
    if x_T.ndim != 2:
        raise ValueError(f"x_T must have shape (N, d); got {x_T.shape}")
    return x_T, grid.astype(x_T.dtype)


def _finish(x, traj, x_T, return_trajectory):
    if return_trajectory:
        return x, jnp.concatenate([x_T[None], traj], axis=0)
    return x


def _step_keys(key: Array, first_step, n: int) -> Array:
    """``fold_in(key, first_step + k)`` for ``k = 0 .. n-1``."""
    steps = jnp.asarray(first_step, jnp.uint32) + jnp.arange(n, dtype=jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(steps)


def reverse_sde_step(score_fn, sde, x, t, t_next, z, add_noise=True):
    """One Euler-Maruyama step of the reverse SDE from ``t`` down to ``t_next`` with standard
    normal ``z`` (shape of ``x``): ``x - h (f - g^2 s) + g sqrt(h) z``, ``h = t - t_next``."""
    h = t - t_next
    g = sde.diffusion(t)
    x_mean = x - h * (sde.drift(x, t) - g**2 * score_fn(x, t))
    return jnp.where(add_noise, x_mean + g * jnp.sqrt(h) * z, x_mean)


def euler_maruyama(
    key: Array,
    score_fn: Callable,
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    denoise: bool = True,
    return_trajectory: bool = False,
    first_step: int | Array = 0,
    unroll: int | bool = 1,
):
    """Euler-Maruyama on the reverse SDE (Song et al. 2021, eq. 6):

    ``x_{k+1} = x_k - h_k [f(x_k, t_k) - g(t_k)^2 s(x_k, t_k)] + g(t_k) sqrt(h_k) z_k``.

    With ``denoise=True`` the last step omits the noise (score_sde's ``noise_removal``).
    ``z_k`` is drawn with ``fold_in(key, first_step + k)``: a run split into segments of the
    grid (each with its offset ``first_step``, ``denoise`` only on the last) gives the numbers
    of the whole run. ``unroll`` is ``lax.scan``'s (steps per loop iteration; fewer loop
    iterations cost less on a GPU when a step is a few small kernels).
    """
    x_T, grid = _prepare(sde, x_T, time_grid)
    unroll = check_unroll(unroll)
    n = grid.shape[0] - 1
    keys = _step_keys(key, first_step, n)
    last = jnp.arange(n) == n - 1

    def body(x, inp):
        k, t, t_next, is_last = inp
        z = rng.normal(k, x.shape, x.dtype)
        x = reverse_sde_step(score_fn, sde, x, t, t_next, z, ~(is_last & denoise))
        return x, (x if return_trajectory else None)

    x, traj = jax.lax.scan(body, x_T, (keys, grid[:-1], grid[1:], last), unroll=unroll)
    return _finish(x, traj, x_T, return_trajectory)


def predictor_corrector(
    key: Array,
    score_fn: Callable,
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    snr: float = 0.16,
    n_corrector: int = 1,
    denoise: bool = True,
    return_trajectory: bool = False,
    first_step: int | Array = 0,
):
    """Predictor-corrector sampler (Song et al. 2021, Alg. 1 and App. G).

    At each ``t_k``: ``n_corrector`` Langevin steps targeting ``p_{t_k}``,
    ``x <- x + e s(x, t_k) + sqrt(2 e) z`` with ``e = 2 a (snr ||z|| / ||s||)^2`` (norms are
    averaged over particles as in score_sde; ``a = (alpha_{t_k} / alpha_{t_{k+1}})^2``, i.e.
    ``1 - beta_k`` for VP and 1 for VE, cf. score_sde issue #73), then one Euler-Maruyama
    predictor step to ``t_{k+1}``. The corrector comes before the predictor as in score_sde.
    Step ``k`` draws from ``fold_in(key, first_step + k)`` (see :func:`euler_maruyama`).
    """
    x_T, grid = _prepare(sde, x_T, time_grid)
    n = grid.shape[0] - 1
    keys = _step_keys(key, first_step, n)
    last = jnp.arange(n) == n - 1

    def corrector(x, k, t, a):
        def one(x, kk):
            s = score_fn(x, t)
            z = rng.normal(kk, x.shape, x.dtype)
            s_norm = jnp.mean(jnp.linalg.norm(s, axis=-1))
            z_norm = jnp.mean(jnp.linalg.norm(z, axis=-1))
            e = 2.0 * a * (snr * z_norm / s_norm) ** 2
            return x + e * s + jnp.sqrt(2.0 * e) * z, None

        x, _ = jax.lax.scan(one, x, jax.random.split(k, n_corrector))
        return x

    def body(x, inp):
        k, t, t_next, is_last = inp
        kc, kp = jax.random.split(k)
        # 1 - beta_k of the discrete VP chain: alpha_bar_k / alpha_bar_{k-1}, where t_next is
        # the less noisy time (score_sde's ``alphas[timestep]``)
        a = (sde.marginal_mean_coeff(t) / sde.marginal_mean_coeff(t_next)) ** 2
        if n_corrector > 0:
            x = corrector(x, kc, t, a)
        z = rng.normal(kp, x.shape, x.dtype)
        x = reverse_sde_step(score_fn, sde, x, t, t_next, z, ~(is_last & denoise))
        return x, (x if return_trajectory else None)

    x, traj = jax.lax.scan(body, x_T, (keys, grid[:-1], grid[1:], last))
    return _finish(x, traj, x_T, return_trajectory)


def probability_flow_heun(
    key: Array | None,
    score_fn: Callable,
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    return_trajectory: bool = False,
):
    """Heun's method (explicit trapezoid) on the probability-flow ODE
    ``dx/dt = f(x,t) - g(t)^2 s(x,t)/2`` (Song et al. 2021 eq. 13; Karras et al. 2022 Alg. 1
    without churn). Deterministic: ``key`` is ignored."""
    del key
    x_T, grid = _prepare(sde, x_T, time_grid)
    drift = pf_ode_drift(score_fn, sde)
    return odeint_grid(lambda t, x: drift(x, t), x_T, grid, "heun", return_path=return_trajectory)


def probability_flow_dopri5(
    key: Array | None,
    score_fn: Callable,
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    return_info: bool = False,
):
    """Adaptive Dormand-Prince 5(4) on the probability-flow ODE from ``time_grid[0]`` to
    ``time_grid[-1]`` (only the end points are used; score_sde uses RK45 with
    ``rtol = atol = 1e-5``). Deterministic: ``key`` is ignored.

    A solve that does not reach ``time_grid[-1]`` (``max_steps`` attempts spent, or a
    non-finite score that makes every step fail its error test) returns NaN, not the state it
    stopped at (which may be the starting noise itself); ``info.success`` tells which."""
    del key
    x_T, grid = _prepare(sde, x_T, time_grid)
    drift = pf_ode_drift(score_fn, sde)
    x, info = odeint_dopri5(
        lambda t, x: drift(x, t), x_T, grid[0], grid[-1], rtol=rtol, atol=atol, max_steps=max_steps
    )
    x = jnp.where(info.success, x, jnp.nan)
    return (x, info) if return_info else x


def ddim(
    key: Array | None,
    score_fn: Callable,
    sde: SDE,
    x_T: Array,
    time_grid: Array,
    return_trajectory: bool = False,
):
    """Deterministic DDIM (Song, Meng & Ermon 2021, eq. 12 with ``eta = 0``):

    ``eps_hat = -sigma_t s(x, t)``, ``x0_hat = (x - sigma_t eps_hat) / alpha_t`` (Tweedie), and
    ``x' = alpha_{t'} x0_hat + sigma_{t'} eps_hat``. For VE/EDM (``alpha = 1``) this is Euler in
    ``sigma`` on the probability-flow ODE (Karras et al. 2022, Sec. 3). Deterministic.
    """
    del key
    x_T, grid = _prepare(sde, x_T, time_grid)

    def body(x, ts):
        t, t_next = ts
        a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
        a1, s1 = sde.marginal_mean_coeff(t_next), sde.marginal_std(t_next)
        eps = -s * score_fn(x, t)
        x0 = (x - s * eps) / a
        x = a1 * x0 + s1 * eps
        return x, (x if return_trajectory else None)

    x, traj = jax.lax.scan(body, x_T, (grid[:-1], grid[1:]))
    return _finish(x, traj, x_T, return_trajectory)


SAMPLERS: dict[str, Callable] = {
    "euler_maruyama": euler_maruyama,
    "em": euler_maruyama,
    "pc": predictor_corrector,
    "ode": probability_flow_heun,
    "heun": probability_flow_heun,
    "dopri5": probability_flow_dopri5,
    "ddim": ddim,
}


def get_sampler(name: str) -> Callable:
    """Look a sampler up by name (keys of :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sample(
    key: Array,
    score_fn: Callable,
    sde: SDE,
    num_samples: int,
    dim: int,
    steps: int = 500,
    method: str = "euler_maruyama",
    grid: str | None = None,
    **kwargs,
) -> Array:
    """Draw ``x_T ~ p_T`` (:meth:`SDE.prior_sample`) and run sampler ``method`` on a ``grid``
    time grid of ``steps`` steps (default: the SDE's). Returns ``(num_samples, dim)``."""
    fn = get_sampler(method)
    k0, k1 = jax.random.split(key)
    x_T = sde.prior_sample(k0, (num_samples, dim))
    return fn(k1, score_fn, sde, x_T, time_grid(sde, steps, grid), **kwargs)
