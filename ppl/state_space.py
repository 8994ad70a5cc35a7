"""State-space models, particle filtering and particle marginal Metropolis-Hastings.

A :class:`StateSpaceModel` is three functions returning numpyro distributions for *one*
particle:

* ``init() -> p_0(x_0)``,
* ``transition(x_prev, t) -> p_t(x_t | x_{t-1} = x_prev)`` (``t >= 1``),
* ``observation(x, t) -> f_t(y_t | x_t = x)``.

:func:`particle_filter` vectorises them over particles and runs one of the particle filters of
:mod:`inference.smc.filters` on the library's single SMC engine
(Chopin & Papaspiliopoulos 2020, *An Introduction to Sequential Monte Carlo*, ch. 10).
:func:`pmmh` is the particle marginal Metropolis-Hastings sampler of Andrieu, Doucet &
Holenstein (2010, Sec. 2.4) (Chopin & Papaspiliopoulos 2020, ch. 16): a random walk on the
unconstrained parameters whose acceptance ratio uses the filter's unbiased likelihood estimate
in place of the intractable likelihood, which leaves the exact posterior invariant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import biject_to
from tqdm.auto import tqdm

from inference.smc import engine as _engine
from inference.smc import filters as _filters
from inference.smc import smoothing as _smoothing
from inference.smc.resampling import RESAMPLERS
from ppl.diagnostics import warn_if_problems
from ppl.model import callables_fingerprint, data_fingerprint, program_fingerprint
from ppl.posterior import Posterior
from ppl.smc_driver import PROGRESS_UPDATES
from ppl.validation import check_callable, check_count, check_flag, check_real, seed_key

__all__ = ["StateSpaceModel", "FilterResult", "particle_filter", "pmmh"]

METHODS = ("bootstrap", "guided", "auxiliary")


class StateSpaceModel:
    """A state-space model given by three functions that return numpyro distributions.

    Args:
        init: ``init() -> Distribution`` of ``X_0``.
        transition: ``transition(x_prev, t) -> Distribution`` of ``X_t | X_{t-1} = x_prev``.
        observation: ``observation(x, t) -> Distribution`` of ``Y_t | X_t = x``.

    ``x`` is a single particle (shape of one draw of ``init()``), ``t`` an int32 scalar
    (traced inside the filter). A distribution's ``log_prob`` is summed over any remaining
    batch dimensions, so ``dist.Normal(loc_vector, scale)`` works without ``to_event``.
    """

    def __init__(self, init: Callable, transition: Callable, observation: Callable):
        for name, fn in (("init", init), ("transition", transition), ("observation", observation)):
            if not callable(fn):
                raise TypeError(
                    f"StateSpaceModel: `{name}` must be a callable returning a numpyro "
                    f"distribution, got {type(fn).__name__}"
                )
        self.init = init
        self.transition = transition
        self.observation = observation

    # Batched functions for inference.smc.filters (leading axis = particles).

    def _init_sample(self, key, n):
        return self.init().sample(key, (n,))

    def _init_logpdf(self, x):
        return jax.vmap(lambda xi: jnp.sum(self.init().log_prob(xi)))(x)

    def _transition_sample(self, key, x_prev, t):
        keys = jax.random.split(key, _num(x_prev))
        return jax.vmap(lambda k, xp: self.transition(xp, t).sample(k))(keys, x_prev)

    def _transition_logpdf(self, x, x_prev, t):
        return jax.vmap(lambda a, b: jnp.sum(self.transition(b, t).log_prob(a)))(x, x_prev)

    def _transition_mean(self, x_prev, t):
        return jax.vmap(lambda xp: self.transition(xp, t).mean)(x_prev)

    def _obs_logpdf(self, y, x, t):
        return jax.vmap(lambda xi: jnp.sum(self.observation(xi, t).log_prob(y)))(x)


def _num(x):
    return jax.tree.leaves(x)[0].shape[0]


class FilterResult(NamedTuple):
    """Output of :func:`particle_filter`.

    Attributes:
        log_likelihood: estimate of ``log p(y_{0:T-1})`` (its exponential is unbiased).
        log_likelihood_running: ``(T,)`` estimates of ``log p(y_{0:t})``.
        filter_means: ``(T, dx)`` weighted means ``sum_n W_t^n X_t^n`` (``dx`` = state size,
            1 for a scalar state).
        ess: ``(T,)`` effective sample sizes after reweighting.
        particles: ``(T, N, *state_shape)`` particle history.
        log_weights: ``(T, N)`` normalised filtering log-weights.
        ssm: the model (used by :meth:`smooth`).
    """

    log_likelihood: float
    log_likelihood_running: np.ndarray
    filter_means: np.ndarray
    ess: np.ndarray
    particles: np.ndarray
    log_weights: np.ndarray
    ssm: Any

    def smooth(self, num_trajectories: int = 100, seed: int = 0) -> np.ndarray:
        """FFBS smoothing trajectories, shape ``(num_trajectories, T, dx)``.

        Backward sampling (Chopin & Papaspiliopoulos 2020, Algorithm 12.2) from the stored
        particle history using the model's transition density.
        """
        check_count("num_trajectories", num_trajectories)
        traj = _smooth_jit(
            self.ssm,
            int(num_trajectories),
            seed_key(seed),
            jnp.asarray(self.particles),
            jnp.asarray(self.log_weights),
            _ssm_contents(self.ssm),
        )
        traj = np.asarray(traj)  # (T, M, *state_shape)
        T, M = traj.shape[:2]
        return np.swapaxes(traj.reshape(T, M, -1), 0, 1)

    def _filtering_moments(self):
        """Weighted mean, sd and 5% / 95% quantiles of each state coordinate at each step,
        each ``(T, dx)``: ``mean_t = sum_n W_t^n X_t^n``, ``sd_t^2 = sum_n W_t^n (X_t^n -
        mean_t)^2``, and the quantiles of the weighted empirical distribution."""
        T, N = self.log_weights.shape
        x = np.asarray(self.particles, dtype=np.float64).reshape(T, N, -1)
        w = np.exp(self.log_weights - self.log_weights.max(axis=1, keepdims=True))
        w = (w / w.sum(axis=1, keepdims=True))[..., None]
        x = np.where(w > 0, x, 0.0)  # weight-zero particles (NaN states) are left out
        mean = np.sum(w * x, axis=1)
        sd = np.sqrt(np.sum(w * (x - mean[:, None]) ** 2, axis=1))
        order = np.argsort(x, axis=1)
        cumulative = np.cumsum(np.take_along_axis(np.broadcast_to(w, x.shape), order, 1), 1)
        ranked = np.take_along_axis(x, order, axis=1)

        def quantile(q):
            index = np.minimum(np.sum(cumulative < q, axis=1), N - 1)
            return np.take_along_axis(ranked, index[:, None], axis=1)[:, 0]

        return mean, sd, quantile(0.05), quantile(0.95)

    def summary(self):
        """A ``pandas.DataFrame`` with one row per time step: the filtering mean, sd and 5% /
        95% quantiles of each state coordinate (``mean[i]``, ``sd[i]``, ``q5[i]``, ``q95[i]``,
        under the weighted particles), the ESS and the running log-likelihood estimate
        ``log p(y_{0:t})``."""
        import pandas as pd

        columns = {}
        for name, value in zip(("mean", "sd", "q5", "q95"), self._filtering_moments(), strict=True):
            for i in range(value.shape[1]):
                columns[f"{name}[{i}]"] = value[:, i]
        columns["ess"] = np.asarray(self.ess, dtype=np.float64)
        columns["log_likelihood"] = np.asarray(self.log_likelihood_running, dtype=np.float64)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self.ess), name="t"))

    def to_arviz(self, num_trajectories: int = 1000, seed: int = 0, var_name: str = "x"):
        """ArviZ data for the filter's output.

        * ``posterior``: ``num_trajectories`` FFBS draws of the joint smoothing distribution
          ``p(x_{0:T-1} | y_{0:T-1})`` (:meth:`smooth`), dims ``(chain=1, draw, time,
          {var_name}_dim)``: equally weighted, so ArviZ's summaries and interval plots apply.
        * ``filtering``: per time step the weighted filtering ``mean``, ``sd``, ``q5`` and
          ``q95`` of each coordinate, the ``ess`` and ``log_likelihood_running``.

        The attribute ``log_likelihood`` holds the estimate of ``log p(y_{0:T-1})``.
        """
        from ppl import arviz_io

        arviz_io.check_var_name(var_name)
        trajectories = self.smooth(num_trajectories, seed)[None]
        attrs = {"method": "particle_filter", "log_likelihood": float(self.log_likelihood)}
        state_dims = ("time", f"{var_name}_dim")
        mean, sd, q5, q95 = self._filtering_moments()
        filtering = {"mean": mean, "sd": sd, "q5": q5, "q95": q95}
        groups = {
            "posterior": arviz_io.dataset(
                {var_name: trajectories}, site_dims={var_name: state_dims}, attrs=attrs
            ),
            "filtering": arviz_io.dataset(
                {
                    **filtering,
                    "ess": np.asarray(self.ess),
                    "log_likelihood_running": np.asarray(self.log_likelihood_running),
                },
                leading=("time",),
                site_dims={name: (f"{var_name}_dim",) for name in filtering},
                attrs=attrs,
            ),
        }
        return arviz_io.to_arviz(groups)


@partial(jax.jit, static_argnums=(0, 1, 5))
def _smooth_jit(ssm, num_trajectories, key, particles, log_weights, contents):
    del contents  # part of the cache key only
    return _smoothing.ffbs(key, particles, log_weights, ssm._transition_logpdf, num_trajectories)


def _validate(
    ssm,
    ys,
    particles,
    method,
    resampling,
    ess_threshold,
    proposal,
    proposal0,
    caller="particle_filter",
):
    if not all(hasattr(ssm, a) for a in ("init", "transition", "observation")):
        raise TypeError(
            f"{caller}: `ssm` must be a StateSpaceModel (with init, transition and "
            f"observation), got {type(ssm).__name__}"
        )
    if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)):
        raise TypeError(f"{caller}: `particles` must be an int, got {particles!r}")
    if particles <= 0:
        raise ValueError(f"{caller}: `particles` must be positive, got {particles}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{caller}: unknown method {method!r}; expected one of {METHODS}")
    if not callable(resampling) and (
        not isinstance(resampling, str) or resampling not in RESAMPLERS
    ):
        raise ValueError(
            f"{caller}: unknown resampling {resampling!r}; expected one of {sorted(RESAMPLERS)}"
        )
    check_real(f"{caller}: `ess_threshold` (in [0, 1])", ess_threshold, 0.0, 1.0)
    if method == "guided" and proposal is None:
        raise ValueError(
            f"{caller}: method='guided' needs `proposal(x_prev, y_t, t) -> distribution`"
        )
    if method == "bootstrap" and (proposal is not None or proposal0 is not None):
        raise ValueError(
            f"{caller}: method='bootstrap' draws from the transition and would ignore "
            "`proposal` / `proposal0`; use method='guided' (or 'auxiliary') to use them"
        )
    if proposal is not None and not callable(proposal):
        raise TypeError(f"{caller}: `proposal` must be callable")
    if proposal0 is not None and not callable(proposal0):
        raise TypeError(f"{caller}: `proposal0` must be callable")
    try:
        if np.iscomplexobj(ys):
            raise TypeError("complex values")
        ys_np = np.asarray(ys, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{caller}: `ys` must be a numeric array: {e}") from None
    if np.issubdtype(np.asarray(ys).dtype, np.integer) or np.asarray(ys).dtype == bool:
        ys_np = np.asarray(ys).astype(np.int32)  # labels and counts stay integers (Categorical)
    if ys_np.ndim == 0 or ys_np.shape[0] == 0:
        raise ValueError(
            f"{caller}: `ys` must have a leading time axis of length >= 1, got shape {ys_np.shape}"
        )
    if not np.all(np.isfinite(ys_np)):
        bad = np.argwhere(~np.isfinite(ys_np.reshape(ys_np.shape[0], -1)))[0, 0]
        raise ValueError(f"{caller}: `ys` must be finite; ys[{bad}] is NaN or inf")
    # Shapes, by abstract evaluation only (no compilation, no FLOPs): each user function is
    # traced once; one that raises, or returns something that is not a distribution of the
    # right shape, is reported by name.
    key = jax.random.key(0)
    y0 = jax.ShapeDtypeStruct(ys_np.shape[1:], _device_ys(ys_np).dtype)

    def trace(what, fn, *args):
        try:
            return jax.eval_shape(fn, *args)
        except Exception as e:  # a user model that cannot even be traced
            raise ValueError(
                f"{caller}: could not evaluate the model's distributions: {what} "
                f"raised {type(e).__name__}: {e}"
            ) from e

    x0 = trace("init().sample(key)", lambda k: ssm.init().sample(k), key)
    observation_support = []

    def observation_shape(x):
        d = ssm.observation(x, jnp.int32(0))
        masked = getattr(d, "_mask", True) is not True  # .mask(m): filler values are allowed
        observation_support.append(None if masked else d.support)
        return jnp.zeros(d.batch_shape + d.event_shape)

    obs = trace("observation(x, t)", observation_shape, x0)
    x1 = trace(
        "transition(x, t).sample(key)",
        lambda x, k: ssm.transition(x, jnp.int32(1)).sample(k),
        x0,
        key,
    )
    if method == "auxiliary":
        _check_transition_mean(ssm, caller)
    shaped = [("transition(x_prev, t)", x1)]
    if proposal is not None:
        shaped.append(
            (
                "proposal(x_prev, y_t, t)",
                trace(
                    "proposal(x_prev, y_t, t).sample(key)",
                    lambda x, y, k: proposal(x, y, jnp.int32(1)).sample(k),
                    x0,
                    y0,
                    key,
                ),
            )
        )
    if proposal0 is not None:
        shaped.append(
            (
                "proposal0(y_0)",
                trace("proposal0(y_0).sample(key)", lambda y, k: proposal0(y).sample(k), y0, key),
            )
        )
    for what, out in shaped:
        if tuple(out.shape) != tuple(x0.shape):
            raise ValueError(
                f"{caller}: {what} draws states of shape {tuple(out.shape)}, but init() "
                f"draws shape {tuple(x0.shape)}; every state must have the same shape"
            )
    if tuple(obs.shape) != tuple(ys_np.shape[1:]):
        raise ValueError(
            f"{caller}: `ys` has shape {ys_np.shape}, so each y_t has shape "
            f"{ys_np.shape[1:]}, but observation(x, t) has shape {tuple(obs.shape)}; "
            "expected ys of shape (T, *observation_shape)"
        )
    if observation_support[0] is not None:
        _check_observation_support(observation_support[0], ys_np, caller)
    return ys_np


def _device_ys(ys_np):
    """The observations on the device: integers as int32, anything else as the float type."""
    integer = np.issubdtype(ys_np.dtype, np.integer)
    return jnp.asarray(ys_np, dtype=jnp.int32 if integer else jnp.result_type(float))


def _check_transition_mean(ssm, caller):
    """The auxiliary filter looks ahead through ``transition(x, t).mean`` (Pitt & Shephard
    1999): a transition without one (``NotImplementedError``) or with an undefined one (a
    Cauchy's NaN) is refused here, not as "all weights are zero" inside the run."""
    x0 = ssm.init().sample(jax.random.key(0))
    try:
        mean = ssm.transition(x0, jnp.int32(1)).mean
    except NotImplementedError:
        mean = None
    if mean is None or not bool(jnp.all(jnp.isfinite(mean))):
        raise ValueError(
            f"{caller}: method='auxiliary' looks ahead through transition(x, t).mean, which "
            f"this transition does not have ({'not implemented' if mean is None else mean}); "
            "use method='bootstrap' or 'guided'"
        )


def _check_observation_support(support, ys_np, caller="particle_filter"):
    """Raise if some ``y_t`` lies outside the support of the observation distribution (a
    non-integer count for a Poisson, a negative value for a Gamma): its density is zero under
    every particle, which the filter would otherwise report as "all weights are zero". A
    support that depends on the particle (``Uniform(x - 1, x + 1)``) cannot be checked here,
    nor a masked observation (``.mask(m)``), whose masked entries may hold any filler."""
    try:
        inside = np.asarray(support.check(jnp.asarray(ys_np)))
    except (jax.errors.UnexpectedTracerError, jax.errors.ConcretizationTypeError):
        return
    inside = inside.reshape(ys_np.shape[0], -1).all(axis=1)
    if not inside.all():
        t = int(np.flatnonzero(~inside)[0])
        raise ValueError(
            f"{caller}: ys[{t}] = {ys_np[t]} is outside the support of observation(x, t) "
            f"({support}); its density is zero for every state"
        )


def _run_filter(
    ssm,
    ys,
    key,
    num_particles,
    method,
    resampling,
    ess_threshold,
    proposal,
    proposal0,
    store_history,
):
    """Traceable core: build the filter for ``method`` and run it (no validation)."""
    if method == "bootstrap":
        fk = _filters.bootstrap_fk(ys, ssm._init_sample, ssm._transition_sample, ssm._obs_logpdf)
        twisted = False
    else:
        ppl_prop, ppl_prop0 = proposal, proposal0
        guided_q = None
        if ppl_prop is not None:

            def guided_q(key, x_prev, t):
                y = ys[t]
                keys = jax.random.split(key, _num(x_prev))

                def one(k, xp):
                    d = ppl_prop(xp, y, t)
                    x = d.sample(k)
                    return x, jnp.sum(d.log_prob(x))

                return jax.vmap(one)(keys, x_prev)

        def guided_q0(key, n):
            if ppl_prop0 is None:
                x = ssm._init_sample(key, n)
                return x, ssm._init_logpdf(x)
            d = ppl_prop0(ys[0])
            x = d.sample(key, (n,))
            return x, jax.vmap(lambda xi: jnp.sum(d.log_prob(xi)))(x)

        if method == "guided":
            fk = _filters.guided_fk(
                ys, ssm._init_logpdf, ssm._transition_logpdf, ssm._obs_logpdf, guided_q, guided_q0
            )
            twisted = False
        else:
            fk = _filters.auxiliary_fk(
                ys,
                ssm._init_sample,
                ssm._init_logpdf,
                ssm._transition_sample,
                ssm._transition_logpdf,
                ssm._obs_logpdf,
                transition_mean=ssm._transition_mean,
                proposal=guided_q,
                proposal0=guided_q0,
            )
            twisted = True
    return _filters.filter_from_fk(
        key, fk, ys.shape[0], num_particles, resampling, ess_threshold, store_history, twisted
    )


def _ssm_contents(ssm, *extra):
    """A static argument for the jitted filter and smoother: what the model's densities (and
    ``extra`` callables) read, so a program is not reused after a global they read, or an
    attribute of the model, changed (``ssm`` alone is hashed by identity)."""
    return callables_fingerprint(ssm.init, ssm.transition, ssm.observation, *extra)


@partial(jax.jit, static_argnums=(0, 3, 4, 5, 7, 8, 9))
def _filter_jit(
    ssm, ys, key, num_particles, method, resampling, ess_threshold, proposal, proposal0, contents
):
    del contents  # part of the cache key only
    return _run_filter(
        ssm, ys, key, num_particles, method, resampling, ess_threshold, proposal, proposal0, True
    )


def particle_filter(
    ssm: StateSpaceModel,
    ys,
    particles: int = 1000,
    method: str = "bootstrap",
    proposal: Callable | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    seed: int = 0,
    proposal0: Callable | None = None,
) -> FilterResult:
    """Run a particle filter on observations ``ys`` of shape ``(T, *obs_shape)``.

    Args:
        ssm: the model.
        ys: observations ``y_0, ..., y_{T-1}``, finite.
        particles: number of particles ``N``.
        method: ``"bootstrap"`` (propose from the transition), ``"guided"`` (propose from
            ``proposal``) or ``"auxiliary"`` (Pitt & Shephard 1999, first-stage weights the
            observation density at the transition mean, optionally with ``proposal``).
        proposal: ``proposal(x_prev, y_t, t) -> Distribution`` over ``x_t`` for ``t >= 1``.
        resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``.
        ess_threshold: resample when ``ESS < ess_threshold * N`` (1: always, 0: never).
        seed: PRNG seed.
        proposal0: ``proposal0(y_0) -> Distribution`` over ``x_0`` (default: ``ssm.init()``).

    Returns:
        A :class:`FilterResult`.

    Raises:
        ValueError / TypeError: bad arguments, before any compilation.
        FloatingPointError: every particle weight was zero at some step.
    """
    ys_np = _validate(ssm, ys, particles, method, resampling, ess_threshold, proposal, proposal0)
    key = seed_key(seed)
    ys_j = _device_ys(ys_np)
    out = _filter_jit(
        ssm,
        ys_j,
        key,
        int(particles),
        method,
        resampling,
        float(ess_threshold),
        proposal,
        proposal0,
        _ssm_contents(ssm, proposal, proposal0),
    )
    _engine.check(out.smc)
    _warn_if_nonfinite_states(out.particles, "particle_filter")
    T = ys_np.shape[0]
    return FilterResult(
        log_likelihood=float(out.log_likelihood),
        log_likelihood_running=np.asarray(out.log_likelihood_running),
        filter_means=np.asarray(out.filter_means).reshape(T, -1),
        ess=np.asarray(out.ess),
        particles=np.asarray(out.particles),
        log_weights=np.asarray(out.log_weights),
        ssm=ssm,
    )


def _warn_if_nonfinite_states(particles, where: str) -> None:
    """Name the steps at which the model produced NaN or infinite particle states: the engine
    gives them weight zero, so the filter goes on with the others, a distribution cut off
    where the transition (or proposal) is undefined."""
    states = np.asarray(particles).reshape(np.shape(particles)[0], np.shape(particles)[1], -1)
    bad = ~np.all(np.isfinite(states), axis=-1)  # (T, N)
    if bad.any():
        steps = np.flatnonzero(bad.any(axis=1))
        warnings.warn(
            f"{where}: {int(bad.sum())} particle state(s) were NaN or infinite, at {steps.size} "
            f"of {bad.shape[0]} steps (first t={int(steps[0])}): the transition or proposal "
            "produced them (a sqrt or log of a negative state, an overflow); they got weight "
            "zero, so the filter ignores the region where the model is undefined",
            stacklevel=3,
        )


@partial(jax.jit, static_argnums=(0, 3, 4))
def _estimates_jit(ssm, ys, keys, options, contents):
    """``log p^N(y)`` of one filter per key; ``options`` are :func:`_run_filter`'s
    ``(num_particles, method, resampling, ess_threshold, proposal, proposal0)``."""
    del contents  # part of the cache key only
    return jax.lax.map(lambda key: _run_filter(ssm, ys, key, *options, False).log_likelihood, keys)


def log_likelihood_estimates(
    ssm: StateSpaceModel,
    ys,
    particles: int = 1000,
    runs: int = 100,
    method: str = "bootstrap",
    proposal: Callable | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    seed: int = 0,
    proposal0: Callable | None = None,
) -> np.ndarray:
    """``runs`` independent estimates of ``log p(y_{0:T-1})``, each from its own particle
    filter (the options of :func:`particle_filter`), shape ``(runs,)``.

    Their spread is the noise of the estimate at this ``particles``: the sd of
    ``log p^N(y)`` falls roughly as ``1 / sqrt(N)`` and grows with ``T``. For PMMH, Doucet,
    Pitt, Deligiannidis & Kohn (2015, *Biometrika* 102(2), sec. 4) choose ``N`` so that the sd
    is about 1.2 to 1.5 at a central parameter value (Pitt et al. 2012: about 0.92 with a
    random-walk proposal that is not tuned). The mean of their exponentials is unbiased for
    ``p(y)``. The filters run one after another inside one compiled program (``lax.map``), so
    memory stays that of one filter without its history.
    """
    ys_np = _validate(ssm, ys, particles, method, resampling, ess_threshold, proposal, proposal0)
    check_count("runs", runs)
    keys = jax.random.split(seed_key(seed), int(runs))
    options = (int(particles), method, resampling, float(ess_threshold), proposal, proposal0)
    contents = _ssm_contents(ssm, proposal, proposal0)
    out = _estimates_jit(ssm, _device_ys(ys_np), keys, options, contents)
    estimates = np.asarray(out, dtype=np.float64)
    if not np.all(np.isfinite(estimates)):
        bad = int(np.sum(~np.isfinite(estimates)))
        raise FloatingPointError(
            f"{bad} of {runs} particle filters ended with every weight zero (log-likelihood "
            "-inf or NaN); check the model against ys, or use more particles or a guided "
            "proposal"
        )
    return estimates


_PMMH_PROGRAMS: dict = {}
MAX_CACHED_PROGRAMS = 8


def pmmh(
    ssm_builder: Callable[[dict], StateSpaceModel],
    prior: dict,
    ys,
    draws: int = 1000,
    particles: int = 256,
    step_size: float = 0.1,
    proposal_cov=None,
    chains: int = 4,
    seed: int = 0,
    warmup: int = 0,
    method: str = "bootstrap",
    resampling: str = "systematic",
    init: dict | None = None,
    progress_bar: bool = True,
    chunk_size: int | None = None,
) -> Posterior:
    """Particle marginal Metropolis-Hastings (Andrieu, Doucet & Holenstein 2010, Sec. 2.4).

    Parameters ``theta`` (one entry per key of ``prior``) are mapped to unconstrained
    ``z = T^{-1}(theta)`` with ``T = biject_to(prior[name].support)``; the chain is a Gaussian
    random walk ``z' = z + L eps`` (``L = step_size * I`` or ``chol(proposal_cov)``) accepted
    with probability

        min(1, p^N(y | theta') p(theta') |J_T(z')| / (p^N(y | theta) p(theta) |J_T(z)|)),

    where ``p^N(y | theta)`` is the particle filter's unbiased likelihood estimate, kept with
    the current state (never re-estimated), so the chain targets the exact posterior
    (Andrieu, Doucet & Holenstein 2010, Thm. 4; Chopin & Papaspiliopoulos 2020, ch. 16).
    Chains are vmapped, iterations a ``lax.scan`` run in jitted chunks between progress-bar
    updates (iteration ``i`` of a chain uses the ``i``-th of keys drawn up front, so the numbers
    do not depend on ``chunk_size``).

    Args:
        ssm_builder: ``ssm_builder(params: dict) -> StateSpaceModel``; must be traceable.
        prior: dict name -> numpyro distribution.
        ys: observations ``(T, *obs_shape)``.
        draws: draws kept per chain (after ``warmup`` discarded ones).
        particles: particles of each filter run.
        step_size: random-walk scale on the unconstrained space (if no ``proposal_cov``).
        proposal_cov: ``(D, D)`` random-walk covariance on the flattened unconstrained space.
        chains: number of chains.
        seed: PRNG seed.
        warmup: iterations discarded at the start (no adaptation).
        method, resampling: of the particle filter.
        init: dict of initial (constrained) values shared by all chains; default,
            independent prior draws.
        progress_bar: tqdm bar over the iterations with the acceptance rate so far. Ctrl-C
            after the warm-up returns the draws completed so far (``attrs["partial"]``) with
            a warning.
        chunk_size: iterations per jitted chunk (default: a twentieth of the run with a bar,
            the whole run without one).

    Returns:
        A :class:`~ppl.posterior.Posterior`: ``samples[name]`` shaped ``(chains, draws,
        *shape)``, ``stats["acceptance_rate"]`` per draw (the Metropolis-Hastings acceptance
        probability ``min(1, ratio)`` of the proposal made there, as in ``ppl.mcmc``; average
        it over draws for a chain's rate) and
        ``stats["log_likelihood_estimate"]`` (the filter estimate attached to each draw).
    """
    check_callable("pmmh: `ssm_builder`", ssm_builder, "ssm_builder(params) -> StateSpaceModel")
    if not isinstance(prior, dict) or not prior:
        raise TypeError("pmmh: `prior` must be a non-empty dict of numpyro distributions")
    for name, d in prior.items():
        if not hasattr(d, "support") or not hasattr(d, "log_prob"):
            raise TypeError(f"pmmh: prior[{name!r}] must be a numpyro distribution")
    for arg, v in (("draws", draws), ("chains", chains), ("particles", particles)):
        check_count(f"pmmh: `{arg}`", v)
    check_count("pmmh: `warmup`", warmup, minimum=0)
    if chunk_size is not None:
        check_count("pmmh: `chunk_size`", chunk_size)
    check_flag("pmmh: `progress_bar`", progress_bar)
    key = seed_key(seed)
    if init is not None and not isinstance(init, dict):
        raise TypeError(f"pmmh: `init` must be a dict or None, got {init!r}")
    if not isinstance(method, str) or method not in METHODS or method == "guided":
        raise ValueError(f"pmmh: method must be 'bootstrap' or 'auxiliary', got {method!r}")
    names = sorted(prior)
    transforms = {k: biject_to(prior[k].support) for k in names}
    shapes = {k: tuple(prior[k].batch_shape + prior[k].event_shape) for k in names}
    unc_shapes = {k: tuple(transforms[k].inverse_shape(shapes[k])) for k in names}
    sizes = [math.prod(unc_shapes[k]) for k in names]
    dim = sum(sizes)
    if proposal_cov is None:
        step = check_real("pmmh: `step_size`", step_size, 0.0, low_open=True)
        chol = step * jnp.eye(dim)
    else:
        try:
            cov = np.asarray(proposal_cov, dtype=float)
        except (TypeError, ValueError) as e:
            raise TypeError(f"pmmh: `proposal_cov` must be a numeric matrix: {e}") from None
        if cov.shape != (dim, dim):
            raise ValueError(
                f"pmmh: `proposal_cov` must have shape ({dim}, {dim}) (flattened unconstrained "
                f"parameters in the order {names}), got {cov.shape}"
            )
        if not np.all(np.isfinite(cov)) or not np.allclose(cov, cov.T):
            raise ValueError("pmmh: `proposal_cov` must be a finite symmetric matrix")
        try:
            chol = jnp.asarray(np.linalg.cholesky(cov))
        except np.linalg.LinAlgError:
            raise ValueError("pmmh: `proposal_cov` must be positive definite") from None
    if init is not None and set(init) - set(names):
        raise ValueError(
            f"pmmh: `init` names unknown parameter(s) {sorted(set(init) - set(names))}; the "
            f"prior's are {names}"
        )
    if init is not None and set(names) - set(init):
        raise ValueError(f"pmmh: `init` misses {sorted(set(names) - set(init))}")
    # The model is validated once at a prior draw (at init's values where given).
    theta0 = {}
    for k in names:
        if init is not None:
            theta0[k] = jnp.asarray(init[k], jnp.result_type(float))
            continue
        try:
            theta0[k] = prior[k].sample(jax.random.key(0))
        except NotImplementedError:
            raise ValueError(
                f"pmmh: prior[{k!r}] ({type(prior[k]).__name__}) cannot be sampled: chains "
                "start at prior draws; give a proper prior, or a start in init="
            ) from None
    try:
        ssm0 = ssm_builder(theta0)
    except Exception as e:
        raise ValueError(
            f"pmmh: `ssm_builder` raised {type(e).__name__} on a prior draw: {e}"
        ) from e
    if not isinstance(ssm0, StateSpaceModel) and not all(
        hasattr(ssm0, a) for a in ("init", "transition", "observation")
    ):
        raise TypeError(
            f"pmmh: `ssm_builder` must return a StateSpaceModel, got {type(ssm0).__name__}"
        )
    ys_np = _validate(ssm0, ys, particles, method, resampling, 0.5, None, None, caller="pmmh")
    ys_j = _device_ys(ys_np)

    def unflatten(z):
        out, i = {}, 0
        for k, s in zip(names, sizes, strict=True):
            out[k] = z[i : i + s].reshape(unc_shapes[k])
            i += s
        return out

    def flatten_unc(theta):
        return jnp.concatenate([jnp.ravel(transforms[k].inv(theta[k])) for k in names])

    def log_prior(z):
        u = unflatten(z)
        lp = 0.0
        for k in names:
            theta = transforms[k](u[k])
            lp = lp + jnp.sum(prior[k].log_prob(theta))
            lp = lp + jnp.sum(transforms[k].log_abs_det_jacobian(u[k], theta))
        return lp

    def log_lik(key, z):
        u = unflatten(z)
        theta = {k: transforms[k](u[k]) for k in names}
        out = _run_filter(
            ssm_builder(theta),
            ys_j,
            key,
            int(particles),
            method,
            resampling,
            0.5,
            None,
            None,
            False,
        )
        ll = out.log_likelihood
        return jnp.where(jnp.isnan(ll), -jnp.inf, ll)

    # The builder runs on traced parameters inside the chains: refuse one that does not
    # (``float(p)``, ``if p > 0``) by name before anything is compiled
    try:
        jax.eval_shape(log_lik, jax.random.PRNGKey(0), jnp.zeros(dim, jnp.result_type(float)))
    except jax.errors.JAXTypeError as e:
        raise ValueError(
            "pmmh: `ssm_builder` and the model it builds must accept traced parameters (no "
            "float(), int() or Python if on them; use jnp.where / lax.cond): "
            f"{type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None

    total = int(warmup) + int(draws)
    # Iteration 0 only evaluates the starting point (one compiled filter serves all).
    iterations = total + 1
    chunk = min(
        chunk_size or (-(-iterations // PROGRESS_UPDATES) if progress_bar else iterations),
        iterations,
    )
    num_chunks = -(-iterations // chunk)

    def start(key, z0):
        """The chain's carry before iteration 0 and the keys of all iterations, padded with
        unused keys to whole chunks (the padding iterations' draws are dropped)."""
        keys = jax.random.split(key, iterations)
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], num_chunks * chunk - iterations, 0)])
        minus_inf = jnp.full((), -jnp.inf, z0.dtype)
        return (z0, minus_inf, minus_inf), keys.reshape(num_chunks, chunk, *keys.shape[1:])

    def run_chunk(carry, keys, first_iteration):
        def body(carry, step):
            k, i = step
            z, lp, ll = carry
            k_prop, k_pf, k_acc = jax.random.split(k, 3)
            jump = chol @ jax.random.normal(k_prop, (dim,), z.dtype)
            z_new = z + jnp.where(i == 0, 0.0, jump)  # iteration 0: the starting point
            lp_new = log_prior(z_new)
            ll_new = jnp.where(jnp.isfinite(lp_new), log_lik(k_pf, z_new), -jnp.inf)
            log_ratio = (lp_new + ll_new) - (lp + ll)
            log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
            accept = jnp.log(jax.random.uniform(k_acc, (), z.dtype)) < log_ratio
            accept = accept | (i == 0)
            accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
            z = jnp.where(accept, z_new, z)
            lp = jnp.where(accept, lp_new, lp)
            ll = jnp.where(accept, ll_new, ll)
            return (z, lp, ll), (z, ll, accept_prob)

        index = first_iteration + jnp.arange(chunk)
        return jax.lax.scan(body, carry, (keys, index))

    k_init, k_chains = jax.random.split(key)
    if init is None:
        init_keys = jax.random.split(k_init, chains)
        z0 = jnp.stack([flatten_unc({k: prior[k].sample(ik) for k in names}) for ik in init_keys])
    else:
        try:
            z_one = flatten_unc({k: jnp.asarray(init[k]) for k in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"pmmh: `init` does not match the prior: {e}") from None
        if z_one.shape != (dim,) or not bool(jnp.all(jnp.isfinite(z_one))):
            raise ValueError(
                f"pmmh: `init` must give each parameter the prior's shape "
                f"({shapes}) and a finite value inside its support"
            )
        z0 = jnp.broadcast_to(z_one, (chains, dim))
    z0 = z0.astype(jnp.result_type(float))
    # The compiled chains are reused by calls with the same model, prior, data and settings
    # (the keys and starting points are inputs), so another seed compiles nothing.
    fingerprint = data_fingerprint((np.asarray(chol),), {"ys": ys_np})
    builder = program_fingerprint(ssm_builder)  # with the globals the builder reads
    cache_key = (builder, tuple((k, prior[k]) for k in names), fingerprint, method)
    cache_key += (resampling, int(particles), total, chunk)
    programs = _PMMH_PROGRAMS.get(cache_key)
    if programs is None:
        programs = _PMMH_PROGRAMS[cache_key] = (
            jax.jit(jax.vmap(start)),
            jax.jit(jax.vmap(run_chunk, in_axes=(0, 0, None))),
        )
        while len(_PMMH_PROGRAMS) > MAX_CACHED_PROGRAMS:
            _PMMH_PROGRAMS.pop(next(iter(_PMMH_PROGRAMS)))
    start_chains, run_chunks = programs
    carry, keys = start_chains(jax.random.split(k_chains, chains), z0)
    outputs, done, interrupted = [], 0, False
    bar = tqdm(total=total, desc="pmmh", unit="it", disable=not progress_bar, dynamic_ncols=True)
    try:
        for c in range(num_chunks):
            carry, out = run_chunks(carry, keys[:, c], c * chunk)
            lo, hi = (1, chunk) if c == 0 else (0, min(chunk, iterations - c * chunk))
            outputs.append(jax.tree.map(lambda a, lo=lo, hi=hi: np.asarray(a)[:, lo:hi], out))
            done += hi - lo
            bar.update(hi - lo)
            accept_probs = np.concatenate([o[2] for o in outputs], axis=1)
            if accept_probs.size:  # the first chunk may hold only the starting point
                bar.set_postfix(acceptance=f"{accept_probs.mean():.2f}", refresh=False)
    except KeyboardInterrupt:
        if done <= warmup:
            raise
        interrupted = True
        warnings.warn(
            f"pmmh interrupted after {done} of {total} iterations: returning the "
            f"{done - warmup} draws per chain completed so far (partial=True)",
            stacklevel=2,
        )
    finally:
        bar.close()
    zs, lls, acc = (
        np.concatenate(parts, axis=1)[:, warmup:] for parts in zip(*outputs, strict=True)
    )
    num_draws = zs.shape[1]
    flat = jax.vmap(jax.vmap(unflatten))(zs)
    samples = {
        k: np.asarray(jax.vmap(jax.vmap(transforms[k]))(flat[k])).reshape(
            (chains, num_draws, *shapes[k])
        )
        for k in names
    }
    post = Posterior(
        samples=samples,
        stats={
            "acceptance_rate": np.asarray(acc),
            "log_likelihood_estimate": np.asarray(lls),
        },
        attrs={"method": f"pmmh/{method}", "particles": int(particles), "partial": interrupted},
    )
    warn_if_problems(post)
    return post
