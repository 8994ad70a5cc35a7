"""Warm-up: dual-averaging step size and Stan's windowed mass-matrix adaptation, for ONE chain.

**Step size.** Dual averaging (Nesterov 2009, "Primal-dual subgradient methods for convex
problems") as adapted by Hoffman & Gelman (2014, sec. 3.2.1 and algorithm 5): with
:math:`\\delta` the target acceptance rate and :math:`\\alpha_t` the acceptance statistic of
iteration :math:`t = 1, 2, \\dots`,

.. math::
    \\bar H_t &= \\Bigl(1 - \\frac{1}{t + t_0}\\Bigr) \\bar H_{t-1}
                 + \\frac{1}{t + t_0} (\\delta - \\alpha_t), \\\\
    \\log \\epsilon_t &= \\mu - \\frac{\\sqrt t}{\\gamma} \\bar H_t, \\\\
    \\log \\bar\\epsilon_t &= t^{-\\kappa} \\log \\epsilon_t
                 + (1 - t^{-\\kappa}) \\log \\bar\\epsilon_{t-1},

with :math:`\\gamma = 0.05`, :math:`t_0 = 10`, :math:`\\kappa = 0.75`,
:math:`\\mu = \\log(10 \\epsilon_0)`, :math:`\\bar H_0 = 0`, :math:`\\log\\bar\\epsilon_0 = 0`.
Warm-up samples with :math:`\\epsilon_t`; the step size for sampling is :math:`\\bar\\epsilon`.

:math:`\\epsilon_0` comes from the heuristic of Hoffman & Gelman (2014, algorithm 4,
:func:`find_reasonable_step_size`), run at the first iteration and again after every update
of the mass matrix, after which dual averaging restarts (as Stan does).

**Random-walk Metropolis** (``kernel.step_size_rule == "robbins_monro"``). Its acceptance
statistic :math:`\\alpha_t = \\min(1, \\pi(x')/\\pi(x))` comes from one random direction and
is far noisier than HMC's, so the dual-averaging iterates scatter (SD 0.7-0.9 in
:math:`\\log\\epsilon` over a 50-iteration buffer, 10-d Gaussian) and, the acceptance curve
being convex in :math:`\\log\\epsilon` around 0.234, :math:`\\bar\\epsilon` accepts too rarely.
RWMH therefore uses the Robbins-Monro recursion of adaptive random-walk Metropolis (Andrieu &
Thoms 2008, "A tutorial on adaptive MCMC", Sec. 5.1 and algorithm 4),

.. math:: \\log \\epsilon_{t+1} = \\log \\epsilon_t + c\\, t^{-0.6} (\\alpha_t - \\delta),
          \\qquad c = 2,

restarted from the optimal scaling :math:`\\epsilon = 2.38 / \\sqrt d` of Roberts, Gelman &
Gilks (1997) (``kernel.initial_scaling``; exact for a Gaussian target whose covariance the mass
matrix matches) at the start and after every mass-matrix update; it samples with the iterates'
average :math:`\\bar\\epsilon` (the weights above), and its terminal buffer is 200 iterations
(``kernel.terminal_buffer``) instead of 50. On i.i.d. Gaussians (fixed identity mass, 12 seeds)
the acceptance at :math:`\\bar\\epsilon` after 200 iterations is then 0.222 / 0.229 / 0.237 on
average for ``d`` = 2 / 10 / 50 (each seed within 0.19-0.28); dual averaging over Stan's 50,
started at the same point, gave 0.19 (0.09-0.33) for ``d`` = 10, and 0.12-0.14 on average
(0.03-0.30 per chain) in ``ppl.mcmc`` as it was, from the doubling heuristic.

**MALA** has the same single-proposal statistic and uses the same rule and terminal buffer,
from the doubling heuristic (``initial_scaling = None``): dual averaging left it at 0.66-0.71
for its 0.574 target (8 chains, 3 seeds; 3-, 10- and 50-d Gaussians), Robbins-Monro gives
0.56-0.59, and an ESS 5-15% higher.

**Mass matrix.** Stan's windowed adaptation (Stan Reference Manual, "HMC algorithm
parameters: automatic parameter tuning"): an initial fast buffer of ``init_buffer`` = 75
iterations (step size only), then slow windows of 25, 50, 100, ... iterations (each twice the
previous; the last one is stretched to end where the terminal buffer begins) during which the
draws' covariance is estimated with Welford's algorithm, and a terminal fast buffer of
``term_buffer`` = 50 iterations. At the end of each slow window the inverse mass matrix is set
to the regularised estimate

.. math:: M^{-1} = \\frac{n}{n + 5} \\hat\\Sigma + 10^{-3} \\frac{5}{n + 5} I,

(diagonal or dense), the estimator is reset, and the step size is re-initialised. If
``init_buffer + 25 + term_buffer > num_warmup`` the buffers are shrunk as in Stan to 15% and
10% of ``num_warmup`` with one slow window in between; with fewer than 20 warm-up iterations
only the step size is adapted.

The schedule is a static function of ``num_warmup`` (:func:`window_schedule`); each
:func:`warmup_step` reads its decisions from constant arrays indexed by the traced step
counter, so ``jax.lax.scan`` over warm-up steps works and can be cut into chunks with
identical results. The caller ``vmap``s over chains.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from inference.mcmc.base import Info, State

INIT_BUFFER = 75
TERM_BUFFER = 50
BASE_WINDOW = 25


# --------------------------------------------------------------------------- dual averaging


class DualAveragingState(NamedTuple):
    """State of Hoffman & Gelman (2014) algorithm 5's step-size adaptation."""

    log_step_size: Array  # log epsilon_t, used during warm-up
    log_step_size_avg: Array  # log epsilon-bar_t, used after warm-up
    h_bar: Array  # running average of (delta - alpha_t)
    mu: Array  # shrinkage target, log(10 epsilon_0)
    t: Array  # iterations since the last restart


def dual_averaging_init(step_size) -> DualAveragingState:
    """Start (or restart) dual averaging from ``step_size``: :math:`\\mu = \\log(10\\epsilon_0)`."""
    log_eps = jnp.log(jnp.asarray(step_size))
    zero = jnp.zeros_like(log_eps)
    return DualAveragingState(
        log_eps, zero, zero, jnp.log(10.0) + log_eps, jnp.zeros((), jnp.int32)
    )


def robbins_monro_update(
    da: DualAveragingState,
    acceptance_rate,
    target_accept,
    gain: float = 2.0,
    decay: float = 0.6,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One Robbins-Monro step on :math:`\\log\\epsilon` (module docstring, random-walk
    Metropolis), :math:`\\log\\epsilon_{t+1} = \\log\\epsilon_t + c t^{-0.6}(\\alpha_t - \\delta)`,
    and the iterates' average :math:`\\log\\bar\\epsilon_t` with the weights of dual averaging
    (:math:`t^{-\\kappa}` on the newest iterate)."""
    alpha, t, tf = _acceptance_and_count(da, acceptance_rate)
    log_eps = da.log_step_size + gain * tf**-decay * (alpha - target_accept)
    log_eps_avg = _averaged(da.log_step_size_avg, log_eps, tf, kappa)
    return da._replace(log_step_size=log_eps, log_step_size_avg=log_eps_avg, t=t)


def _acceptance_and_count(da: DualAveragingState, acceptance_rate):
    """The acceptance statistic in ``[0, 1]`` (NaN: 0), and ``t + 1`` as integer and float."""
    alpha = jnp.clip(jnp.nan_to_num(acceptance_rate, nan=0.0), 0.0, 1.0)
    t = da.t + 1
    return alpha, t, t.astype(da.log_step_size.dtype)


def _averaged(log_eps_avg, log_eps, tf, kappa):
    """:math:`\\log\\bar\\epsilon_t = t^{-\\kappa}\\log\\epsilon_t + (1 - t^{-\\kappa})
    \\log\\bar\\epsilon_{t-1}`."""
    weight = tf**-kappa
    return weight * log_eps + (1.0 - weight) * log_eps_avg


def dual_averaging_update(
    da: DualAveragingState,
    acceptance_rate,
    target_accept,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One iteration of Hoffman & Gelman (2014) algorithm 5 (equations in the module docstring)."""
    alpha, t, tf = _acceptance_and_count(da, acceptance_rate)
    eta = 1.0 / (tf + t0)
    h_bar = (1.0 - eta) * da.h_bar + eta * (target_accept - alpha)
    log_eps = da.mu - jnp.sqrt(tf) / gamma * h_bar
    log_eps_avg = _averaged(da.log_step_size_avg, log_eps, tf, kappa)
    return DualAveragingState(log_eps, log_eps_avg, h_bar, da.mu, t)


# ------------------------------------------------------------------------ Welford estimator


class WelfordState(NamedTuple):
    """Running mean and sum of squared deviations (Welford 1962)."""

    mean: Array  # (d,)
    m2: Array  # (d,) for a diagonal estimate, (d, d) for a dense one
    count: Array


def welford_init(d: int, dense: bool, dtype=jnp.float32) -> WelfordState:
    m2 = jnp.zeros((d, d) if dense else (d,), dtype)
    return WelfordState(jnp.zeros((d,), dtype), m2, jnp.zeros((), jnp.int32))


def welford_update(ws: WelfordState, x: Array) -> WelfordState:
    """:math:`n \\leftarrow n+1`, :math:`\\delta = x - m`, :math:`m \\leftarrow m + \\delta/n`,
    :math:`M_2 \\leftarrow M_2 + \\delta (x - m)^\\top` (only the diagonal if not dense)."""
    count = ws.count + 1
    delta = x - ws.mean
    mean = ws.mean + delta / count.astype(x.dtype)
    if ws.m2.ndim == 2:
        m2 = ws.m2 + jnp.outer(delta, x - mean)
    else:
        m2 = ws.m2 + delta * (x - mean)
    return WelfordState(mean, m2, count)


def welford_covariance(ws: WelfordState) -> Array:
    """Stan's regularised estimate :math:`\\frac{n}{n+5}\\hat\\Sigma + 10^{-3}\\frac{5}{n+5} I`,
    with :math:`\\hat\\Sigma = M_2 / (n - 1)` the sample covariance."""
    n = ws.count.astype(ws.mean.dtype)
    cov = ws.m2 / jnp.maximum(n - 1.0, 1.0)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    eye = jnp.eye(ws.mean.shape[0], dtype=cov.dtype) if cov.ndim == 2 else 1.0
    cov = (n / (n + 5.0)) * cov + shrink * eye
    if cov.ndim == 2:
        cov = 0.5 * (cov + cov.T)
    return cov


# ----------------------------------------------------------------- step-size initialisation


def find_reasonable_step_size(
    key: Array,
    state: State,
    logdensity_fn,
    log_accept_ratio,
    step_size,
    inverse_mass_matrix: Array,
    active=True,
    max_iterations: int = 100,
) -> Array:
    """Hoffman & Gelman (2014), algorithm 4: double or halve :math:`\\epsilon` until the
    acceptance ratio of one elementary proposal crosses 1/2.

    With :math:`r(\\epsilon)` the ratio of one proposal (for HMC/NUTS one leapfrog step from a
    fixed momentum draw: :math:`\\exp(H(x,p) - H(x', p'))`), set
    :math:`a = 2\\,\\mathbb 1[r(\\epsilon_0) > 1/2] - 1` and repeat
    :math:`\\epsilon \\leftarrow 2^a \\epsilon` while :math:`r(\\epsilon)^a > 2^{-a}`.
    ``log_accept_ratio(key, state, logdensity_fn, step_size, inverse_mass_matrix)`` computes
    :math:`\\log r`; the same key (same momentum/noise) is used at every trial, as in the paper.
    ``active=False`` makes the loop run zero iterations and returns ``step_size``.
    """
    step_size = jnp.asarray(step_size)
    log_half = jnp.log(jnp.asarray(0.5, step_size.dtype))

    def cond(carry):
        return carry[3]

    def body(carry):
        eps, direction, it, _ = carry
        log_ratio = log_accept_ratio(key, state, logdensity_fn, eps, inverse_mass_matrix)
        direction = jnp.where(it == 0, jnp.where(log_ratio > log_half, 1, -1), direction)
        keep_going = (direction * log_ratio > direction * log_half) & (it + 1 < max_iterations)
        eps = jnp.where(keep_going, eps * jnp.exp2(direction.astype(eps.dtype)), eps)
        return eps, direction, it + 1, keep_going

    init = (step_size, jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32), jnp.asarray(active))
    return jax.lax.while_loop(cond, body, init)[0]


# -------------------------------------------------------------------------------- schedule


def window_schedule(
    num_warmup: int,
    init_buffer: int = INIT_BUFFER,
    term_buffer: int = TERM_BUFFER,
    base_window: int = BASE_WINDOW,
) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows as half-open ``(start, end)`` iteration intervals.

    A transcription of Stan's ``windowed_adaptation`` (``set_window_params``,
    ``compute_next_window``): for ``num_warmup=1000`` the windows are
    ``[(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]``.
    """
    num_warmup = int(num_warmup)
    if num_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - (init_buffer + term_buffer)
    last_end = num_warmup - term_buffer - 1  # inclusive index of the last slow iteration
    windows = []
    start, size = init_buffer, base_window
    end = init_buffer + base_window - 1
    while True:
        end = min(end, last_end)
        windows.append((start, end + 1))
        if end == last_end:
            break
        # Stan's compute_next_window(): double, and stretch the window to the terminal buffer
        # if the one after it would not fit.
        size *= 2
        start, end = end + 1, end + size
        if end != last_end and end + 2 * size >= num_warmup - term_buffer:
            end = last_end
    return windows


def _schedule_arrays(num_warmup: int, term_buffer: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration flags: inside a slow window; last iteration of a slow window."""
    in_window = np.zeros(max(num_warmup, 1), bool)
    window_end = np.zeros(max(num_warmup, 1), bool)
    for start, end in window_schedule(num_warmup, term_buffer=term_buffer):
        in_window[start:end] = True
        window_end[end - 1] = True
    return in_window, window_end


# -------------------------------------------------------------------------------- warm-up


def restart_step_size(
    key: Array, state: State, logdensity_fn, kernel, step_size, inverse_mass_matrix, active=True
) -> Array:
    """The step size a (re)start of the adaptation begins from (``step_size`` where ``active``
    is false): ``kernel.initial_scaling / sqrt(d)``, the optimal random-walk scaling of Roberts,
    Gelman & Gilks (1997), for RWMH; :func:`find_reasonable_step_size` for the others."""
    if kernel.initial_scaling is None:
        return find_reasonable_step_size(
            key,
            state,
            logdensity_fn,
            kernel.log_accept_ratio,
            step_size,
            inverse_mass_matrix,
            active=active,
        )
    scaled = kernel.initial_scaling / np.sqrt(state.position.shape[0])
    return jnp.where(active, jnp.asarray(scaled, jnp.result_type(step_size)), step_size)


class WarmupState(NamedTuple):
    """Everything one chain's warm-up carries from one iteration to the next."""

    state: State
    step_size: Array  # step size for the next iteration
    inverse_mass_matrix: Array  # (d,) or (d, d)
    dual_averaging: DualAveragingState
    welford: WelfordState
    step: Array  # warm-up iterations done
    reinit_step_size: Array  # run the step-size heuristic before the next iteration


def warmup_init(
    position: Array, logdensity_fn, kernel, num_warmup: int, initial_step_size=1.0
) -> WarmupState:
    """Initial warm-up state: identity inverse mass matrix (diagonal or dense per
    ``kernel.dense_mass``); the step-size heuristic runs at the first :func:`warmup_step`."""
    del num_warmup  # the schedule is a function of num_warmup; nothing to precompute here
    position = jnp.asarray(position)
    state = kernel.init(position, logdensity_fn)
    d, dtype = position.shape[0], position.dtype
    inverse_mass_matrix = jnp.eye(d, dtype=dtype) if kernel.dense_mass else jnp.ones(d, dtype)
    step_size = jnp.asarray(initial_step_size, dtype)
    return WarmupState(
        state=state,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        dual_averaging=dual_averaging_init(step_size),
        welford=welford_init(d, kernel.dense_mass, dtype),
        step=jnp.zeros((), jnp.int32),
        reinit_step_size=jnp.ones((), bool),
    )


def warmup_step(
    key: Array, wstate: WarmupState, logdensity_fn, kernel, num_warmup: int
) -> tuple[WarmupState, Info]:
    """One warm-up iteration: (re)initialise the step size if due, take a kernel step, update
    dual averaging, and inside a slow window feed the Welford estimator; at a window's end
    set the inverse mass matrix and schedule a step-size re-initialisation."""
    schedule = _schedule_arrays(num_warmup, kernel.terminal_buffer)
    in_window, window_end = (jnp.asarray(a) for a in schedule)
    i = wstate.step
    idx = jnp.clip(i, 0, in_window.shape[0] - 1)
    in_range = i < num_warmup
    is_in_window = in_window[idx] & in_range
    is_window_end = window_end[idx] & in_range

    key_init, key_step = jax.random.split(key)
    inverse_mass_matrix = wstate.inverse_mass_matrix
    reinit = wstate.reinit_step_size
    step_size = restart_step_size(
        key_init,
        wstate.state,
        logdensity_fn,
        kernel,
        wstate.step_size,
        inverse_mass_matrix,
        active=reinit,
    )
    da = jax.tree.map(
        lambda a, b: jnp.where(reinit, a, b), dual_averaging_init(step_size), wstate.dual_averaging
    )

    state, info = kernel.step(key_step, wstate.state, logdensity_fn, step_size, inverse_mass_matrix)

    if kernel.step_size_rule == "robbins_monro":
        da = robbins_monro_update(da, info.acceptance_rate, kernel.target_accept)
    else:
        da = dual_averaging_update(da, info.acceptance_rate, kernel.target_accept)
    welford = jax.tree.map(
        lambda a, b: jnp.where(is_in_window, a, b),
        welford_update(wstate.welford, state.position),
        wstate.welford,
    )
    new_inverse_mass_matrix = jnp.where(
        is_window_end, welford_covariance(welford), inverse_mass_matrix
    )
    fresh = welford_init(state.position.shape[0], welford.m2.ndim == 2, state.position.dtype)
    welford = jax.tree.map(lambda a, b: jnp.where(is_window_end, a, b), fresh, welford)

    new = WarmupState(
        state=state,
        step_size=jnp.exp(da.log_step_size),
        inverse_mass_matrix=new_inverse_mass_matrix,
        dual_averaging=da,
        welford=welford,
        step=i + 1,
        reinit_step_size=is_window_end,
    )
    return new, info


def warmup_final(wstate: WarmupState) -> tuple[State, Array, Array]:
    """The state, the step size :math:`\\bar\\epsilon = \\exp(\\log\\bar\\epsilon_t)` of dual
    averaging, and the inverse mass matrix to sample with."""
    da = wstate.dual_averaging
    step_size = jnp.where(da.t > 0, jnp.exp(da.log_step_size_avg), wstate.step_size)
    return wstate.state, step_size, wstate.inverse_mass_matrix
