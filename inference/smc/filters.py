"""Particle filters as thin adapters from a state-space model to a Feynman-Kac model.

A state-space model (Chopin & Papaspiliopoulos 2020, ch. 2) is

    X_0 ~ P_0(dx_0),   X_t | X_{t-1} = x ~ P_t(x, dx_t),   Y_t | X_t = x ~ f_t(y_t | x),

given here by plain, *batched* functions (leading axis = particles):

* ``init_sample(key, n) -> x`` and ``init_logpdf(x) -> (n,)``;
* ``transition_sample(key, x_prev, t) -> x`` and ``transition_logpdf(x, x_prev, t) -> (n,)``;
* ``obs_logpdf(y_t, x, t) -> (n,)``.

States may be any pytree with leading axis ``n``. ``ys`` is an array (or pytree) whose
leading axis is time, ``T`` observations ``y_0, ..., y_{T-1}``.

Each filter only chooses ``M_t`` and ``G_t`` (Chopin & Papaspiliopoulos 2020, ch. 10.3) and
hands the model to :func:`inference.smc.engine.run`:

* bootstrap (Gordon et al. 1993; Sec. 10.3.1): ``M_t = P_t``, ``G_t = f_t(y_t | x_t)``;
* guided (Sec. 10.3.2): ``M_t = Q_t`` a user proposal,
  ``G_t = f_t(y_t | x_t) p_t(x_t | x_{t-1}) / q_t(x_t | x_{t-1})``, and
  ``G_0 = f_0(y_0 | x_0) p_0(x_0) / q_0(x_0)``;
* auxiliary (Pitt & Shephard 1999; Sec. 10.3.3): the guided model with potentials twisted by
  a look-ahead function ``eta_{t+1}(x_t) ~ p(y_{t+1} | x_t)``,
  ``G~_t = G_t(x_{t-1}, x_t) eta_{t+1}(x_t) / eta_t(x_{t-1})`` (``eta_0 = eta_T = 1``), so that
  resampling at ``t`` uses the first-stage weights ``W_{t-1} eta_t(x_{t-1})``. The engine then
  estimates ``Z~_t = E[ p(y_{0:t} | X) eta_{t+1}(X_t) ]``; the likelihood estimate is the
  unnormalised particle measure of ``1/eta_{t+1}``,

      p^N(y_{0:t}) = Z~_t^N * sum_n W~_t^n / eta_{t+1}(X_t^n),

  which is unbiased because ``gamma_t^N(phi) = Z_t^N sum_n W_t^n phi(X_t^n)`` is unbiased for
  every bounded ``phi`` (Del Moral 2004, Thm. 7.4.2; Chopin & Papaspiliopoulos 2020,
  Sec. 10.3.3 and Prop. 16.3). The filtering distribution at ``t`` is likewise the twisted
  particle system reweighted by ``1/eta_{t+1}``. By default ``eta_t(x_{t-1})`` is the
  predictive likelihood at the transition mean, ``f_t(y_t | E[X_t | x_{t-1}])``, with the mean
  supplied by the user (``transition_mean``) as it is model-specific.

Outputs (:class:`FilterOutput`): the log-likelihood estimate and its running values, the
filtering means ``sum_n W_t^n X_t^n``, the ESS, and optionally the particle history
(particles and normalised filtering log-weights at each ``t``) for smoothing.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from .engine import FeynmanKac, SMCResult, run
from .resampling import Resampler

__all__ = [
    "FilterOutput",
    "bootstrap_fk",
    "guided_fk",
    "auxiliary_fk",
    "bootstrap_filter",
    "guided_filter",
    "auxiliary_filter",
    "filter_from_fk",
]

PyTree = Any


class FilterOutput(NamedTuple):
    """Result of a particle filter run over ``T`` observations with ``N`` particles.

    Attributes:
        log_likelihood: scalar estimate of ``log p(y_{0:T-1})`` (unbiased on the natural scale).
        log_likelihood_running: ``(T,)`` estimates of ``log p(y_{0:t})``.
        filter_means: pytree like one particle with leading axis ``T``: ``sum_n W_t^n X_t^n``.
        ess: ``(T,)`` ESS after reweighting at ``t`` (of the twisted weights for the APF).
        particles: particle history, leading axes ``(T, N)``, or ``None``.
        log_weights: ``(T, N)`` normalised filtering log-weights, or ``None``.
        smc: the engine's :class:`~inference.smc.engine.SMCResult` (``summaries`` removed).
    """

    log_likelihood: Array
    log_likelihood_running: Array
    filter_means: PyTree
    ess: Array
    particles: PyTree
    log_weights: Array | None
    smc: SMCResult


def _index(ys: PyTree, t: Array) -> PyTree:
    return jax.tree.map(lambda y: y[t], ys)


def _weighted_mean(x: PyTree, log_W: Array) -> PyTree:
    """``sum_n W^n x^n``; particles of weight zero are left out (a NaN state, which the
    engine gives weight zero, would otherwise make the mean NaN: 0 * NaN = NaN)."""
    w = jnp.exp(log_W)

    def mean(leaf):
        kept = jnp.where(jnp.reshape(w > 0, w.shape + (1,) * (leaf.ndim - 1)), leaf, 0.0)
        return jnp.tensordot(w.astype(leaf.dtype), kept, axes=1)

    return jax.tree.map(mean, x)


def bootstrap_fk(
    ys: PyTree,
    init_sample: Callable,
    transition_sample: Callable,
    obs_logpdf: Callable,
) -> FeynmanKac:
    """Bootstrap Feynman-Kac model: ``M_0 = P_0``, ``M_t = P_t``, ``G_t = f_t(y_t | x_t)``.

    Step ``t = 0`` does not move (the particles already are ``X_0 ~ P_0``); it only weights
    by ``G_0 = f_0(y_0 | x_0)``.
    """

    def init(key, n):
        x = init_sample(key, n)
        return x, jnp.zeros((n,), jnp.result_type(float))

    def step(key, x, t):
        x = jax.lax.cond(t == 0, lambda: x, lambda: transition_sample(key, x, t))
        return x, obs_logpdf(_index(ys, t), x, t), ()

    return FeynmanKac(init, step)


def guided_fk(
    ys: PyTree,
    init_logpdf: Callable,
    transition_logpdf: Callable,
    obs_logpdf: Callable,
    proposal: Callable,
    proposal0: Callable,
) -> FeynmanKac:
    """Guided Feynman-Kac model (Chopin & Papaspiliopoulos 2020, Sec. 10.3.2).

    ``proposal0(key, n) -> (x_0, log q_0(x_0))`` and
    ``proposal(key, x_prev, t) -> (x_t, log q_t(x_t | x_prev))`` (batched). The initial
    importance weight ``log p_0(x_0) - log q_0(x_0)`` is returned as ``log_w0``; step ``t``
    returns ``log f_t(y_t | x_t) + log p_t(x_t | x_{t-1}) - log q_t(x_t | x_{t-1})``.
    """

    def init(key, n):
        x, log_q = proposal0(key, n)
        return x, init_logpdf(x) - log_q

    def step(key, x_prev, t):
        def first():
            return x_prev, jnp.zeros_like(init_logpdf(x_prev))

        def later():
            x, log_q = proposal(key, x_prev, t)
            return x, transition_logpdf(x, x_prev, t) - log_q

        x, log_ratio = jax.lax.cond(t == 0, first, later)
        return x, obs_logpdf(_index(ys, t), x, t) + log_ratio, ()

    return FeynmanKac(init, step)


def auxiliary_fk(
    ys: PyTree,
    init_sample: Callable,
    init_logpdf: Callable,
    transition_sample: Callable,
    transition_logpdf: Callable,
    obs_logpdf: Callable,
    log_eta: Callable | None = None,
    transition_mean: Callable | None = None,
    proposal: Callable | None = None,
    proposal0: Callable | None = None,
) -> FeynmanKac:
    """Auxiliary particle filter (Pitt & Shephard 1999) as a twisted guided model.

    Particles are the pytree ``{"x": x_t, "log_eta": log eta_{t+1}(x_t)}`` so that the
    first-stage weight computed at ``t`` is reused at ``t + 1``:

        log G~_t = log G_t(x_{t-1}, x_t) + log eta_{t+1}(x_t) - log eta_t(x_{t-1}),

    with ``G_t`` the guided (or, without a proposal, bootstrap) potential, ``eta_0 = 1`` and
    ``eta_T = 1``. ``log_eta(x_prev, t) -> (n,)`` approximates ``log p(y_t | x_{t-1})``;
    if it is ``None``, ``log f_t(y_t | transition_mean(x_prev, t))`` is used (the
    "predictive likelihood at the mean" of Pitt & Shephard 1999, Sec. 3.2).
    See the module docstring for the unbiased likelihood estimate.
    """
    num_obs = jax.tree.leaves(ys)[0].shape[0]
    if log_eta is None:
        if transition_mean is None:
            raise ValueError("auxiliary filter needs either `log_eta` or `transition_mean`")

        def log_eta(x_prev, t):
            return obs_logpdf(_index(ys, t), transition_mean(x_prev, t), t)

    if proposal0 is None:

        def proposal0(key, n):
            x = init_sample(key, n)
            return x, init_logpdf(x)

    if proposal is None:

        def proposal(key, x_prev, t):
            x = transition_sample(key, x_prev, t)
            return x, transition_logpdf(x, x_prev, t)

    def next_log_eta(x, t):
        # eta_{t+1}(x_t); equal to one after the last observation.
        t_next = jnp.minimum(t + 1, num_obs - 1)
        le = log_eta(x, t_next)
        return jnp.where(t + 1 < num_obs, le, jnp.zeros_like(le))

    def init(key, n):
        x, log_q = proposal0(key, n)
        return {"x": x, "log_eta": jnp.zeros_like(log_q)}, init_logpdf(x) - log_q

    def step(key, particles, t):
        x_prev, log_eta_prev = particles["x"], particles["log_eta"]

        def first():
            return x_prev, jnp.zeros_like(log_eta_prev)

        def later():
            x, log_q = proposal(key, x_prev, t)
            return x, transition_logpdf(x, x_prev, t) - log_q

        x, log_ratio = jax.lax.cond(t == 0, first, later)
        le_next = next_log_eta(x, t)
        log_g = obs_logpdf(_index(ys, t), x, t) + log_ratio + le_next - log_eta_prev
        return {"x": x, "log_eta": le_next}, log_g, ()

    return FeynmanKac(init, step)


def filter_from_fk(
    key: Array,
    fk: FeynmanKac,
    num_obs: int,
    num_particles: int,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    store_history: bool = False,
    twisted: bool = False,
) -> FilterOutput:
    """Run a filter's Feynman-Kac model through the engine and read off filter outputs.

    With ``twisted=True`` (auxiliary filter) particles are ``{"x", "log_eta"}`` and the
    filtering weights and likelihood are corrected by ``1/eta_{t+1}`` as described in the
    module docstring.
    """

    def summary_fn(particles, log_W, aux):
        if twisted:
            x = particles["x"]
            corrected = log_W - particles["log_eta"]
            log_c = jax.nn.logsumexp(corrected)
            log_Wf = corrected - log_c
        else:
            x = particles
            log_c = jnp.zeros((), log_W.dtype)
            log_Wf = log_W
        out = {"mean": _weighted_mean(x, log_Wf), "log_c": log_c}
        if store_history:
            out["x"] = x
            out["log_W"] = log_Wf
        return out

    res = run(
        key,
        fk,
        num_particles,
        num_obs,
        resampling=resampling,
        ess_threshold=ess_threshold,
        summary_fn=summary_fn,
    )
    s = res.summaries
    running = res.log_evidence_running + s["log_c"]
    return FilterOutput(
        log_likelihood=running[-1],
        log_likelihood_running=running,
        filter_means=s["mean"],
        ess=res.ess,
        particles=s.get("x") if store_history else None,
        log_weights=s.get("log_W") if store_history else None,
        smc=res._replace(summaries=None),
    )


def bootstrap_filter(
    key: Array,
    ys: PyTree,
    num_particles: int,
    init_sample: Callable,
    transition_sample: Callable,
    obs_logpdf: Callable,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    store_history: bool = False,
) -> FilterOutput:
    """Bootstrap particle filter (Gordon, Salmond & Smith 1993); see :func:`bootstrap_fk`."""
    fk = bootstrap_fk(ys, init_sample, transition_sample, obs_logpdf)
    num_obs = jax.tree.leaves(ys)[0].shape[0]
    return filter_from_fk(key, fk, num_obs, num_particles, resampling, ess_threshold, store_history)


def guided_filter(
    key: Array,
    ys: PyTree,
    num_particles: int,
    init_logpdf: Callable,
    transition_logpdf: Callable,
    obs_logpdf: Callable,
    proposal: Callable,
    proposal0: Callable,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    store_history: bool = False,
) -> FilterOutput:
    """Guided particle filter with a user proposal; see :func:`guided_fk`."""
    fk = guided_fk(ys, init_logpdf, transition_logpdf, obs_logpdf, proposal, proposal0)
    num_obs = jax.tree.leaves(ys)[0].shape[0]
    return filter_from_fk(key, fk, num_obs, num_particles, resampling, ess_threshold, store_history)


def auxiliary_filter(
    key: Array,
    ys: PyTree,
    num_particles: int,
    init_sample: Callable,
    init_logpdf: Callable,
    transition_sample: Callable,
    transition_logpdf: Callable,
    obs_logpdf: Callable,
    log_eta: Callable | None = None,
    transition_mean: Callable | None = None,
    proposal: Callable | None = None,
    proposal0: Callable | None = None,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    store_history: bool = False,
) -> FilterOutput:
    """Auxiliary particle filter (Pitt & Shephard 1999); see :func:`auxiliary_fk`."""
    fk = auxiliary_fk(
        ys,
        init_sample,
        init_logpdf,
        transition_sample,
        transition_logpdf,
        obs_logpdf,
        log_eta=log_eta,
        transition_mean=transition_mean,
        proposal=proposal,
        proposal0=proposal0,
    )
    num_obs = jax.tree.leaves(ys)[0].shape[0]
    return filter_from_fk(
        key, fk, num_obs, num_particles, resampling, ess_threshold, store_history, twisted=True
    )
