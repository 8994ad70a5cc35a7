"""Adaptive tempered SMC from the prior to the posterior, as a Feynman-Kac model of the engine.

The path of distributions is :math:`\\pi_\\beta(x) \\propto p(x)\\, L(x)^{\\beta}`,
:math:`0 = \\beta_0 < \\beta_1 < \\dots < \\beta_K = 1` (Neal 2001; Del Moral, Doucet & Jasra
2006). In Feynman-Kac form (Chopin & Papaspiliopoulos 2020, ch. 17): ``M_0`` is the prior,
the potential of stage ``k`` is :math:`G_k(x) = L(x)^{\\beta_k - \\beta_{k-1}}`, and the move is
an MCMC kernel leaving :math:`\\pi_{\\beta_{k-1}}` invariant, applied after resampling. The
engine (:func:`inference.smc.engine.run`) does the rest; its evidence estimate
:math:`\\sum_k \\log \\frac1N \\sum_n G_k(x^n)` is the log normalising constant
:math:`\\log \\int p(x) L(x) dx`.

Adaptive temperatures (Jasra et al. 2011; Zhou, Johansen & Aston 2016): the next
:math:`\\beta_k` solves, by bisection, :math:`\\mathrm{ESS}(\\{L(x^n)^{\\beta_k -
\\beta_{k-1}}\\}) = \\rho N` with the target ratio :math:`\\rho` (``target_ess``); as the
particles are equally weighted after resampling, this ESS is the conditional ESS of Zhou et
al. (2016, eq. 3.16).

MCMC moves (``rwmh``, ``mala``, ``hmc`` from :mod:`inference.mcmc`) use the particle
covariance (diagonal or dense) as the inverse mass matrix; the step size starts at a
dimension-scaled value and is adapted between stages towards the kernel's target acceptance,
:math:`\\log \\epsilon \\leftarrow \\log \\epsilon + (\\bar a - a^*)` (Buchholz, Chopin & Jacob
2021). The waste-free variant (Dau & Chopin 2022) resamples ``N / P`` particles and keeps every
state of their ``P - 1``-step chains.

The run is a fixed-length scan of ``max_stages`` engine steps; once :math:`\\beta = 1` the
remaining steps are no-ops (zero increment, no resampling), so it stays one compiled program
(a chunked host driver stops at the first chunk after :math:`\\beta = 1` instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from inference.mcmc import base as mcmc_base
from inference.smc import engine

BISECTION_ITERATIONS = 50
# Just under one: resample whenever the weights are not uniform (every tempering stage), but
# not once beta has reached 1 and the increments are zero.
ALWAYS_BUT_UNIFORM = 1.0 - 1e-4


class TemperedResult(NamedTuple):
    """Output of :func:`run`. Stage arrays have length ``max_stages`` (unused stages: NaN)."""

    particles: Array  # (N, d) final particles, equally weighted
    log_evidence: Array  # scalar log Z estimate
    num_stages: Array  # number of stages used to reach beta = 1
    reached_one: Array  # bool: beta reached 1 within max_stages
    temperature: Array  # (max_stages,) beta after each stage
    ess: Array  # (max_stages,) ESS after reweighting
    acceptance_rate: Array  # (max_stages,) mean MCMC acceptance of the move at the stage's
    # temperature (after its resampling; the last one at beta = 1); NaN where none was made
    step_size: Array  # (max_stages,) MCMC step size used in that move
    log_evidence_increments: Array  # (max_stages,)
    failed: Array
    nan_likelihoods: Array  # particles whose log-likelihood was NaN (given weight zero)


def _next_temperature(log_lik: Array, beta: Array, target_ess: float) -> Array:
    """Largest ``beta' <= 1`` with ``ESS(exp((beta' - beta) log L)) >= target_ess * N``."""
    n = log_lik.shape[0]
    log_lik = jnp.where(jnp.isnan(log_lik), -jnp.inf, log_lik)

    def ess_ratio(delta):
        return engine.ess(delta * log_lik) / n

    def body(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        ok = ess_ratio(mid) >= target_ess
        return jnp.where(ok, mid, low), jnp.where(ok, high, mid)

    remaining = 1.0 - beta
    low, _ = jax.lax.fori_loop(0, BISECTION_ITERATIONS, body, (jnp.zeros_like(beta), remaining))
    delta = jnp.where(ess_ratio(remaining) >= target_ess, remaining, low)
    # Guarantee progress even when one particle dominates at any positive increment.
    delta = jnp.maximum(delta, jnp.minimum(remaining, 1e-6))
    return jnp.minimum(beta + delta, 1.0)


def _covariance(x: Array, dense: bool) -> Array:
    centred = x - jnp.mean(x, axis=0)
    n = x.shape[0]
    if dense:
        cov = centred.T @ centred / (n - 1)
        return cov + 1e-8 * jnp.eye(x.shape[1], dtype=x.dtype)
    return jnp.var(x, axis=0, ddof=1) + 1e-8


def program(
    log_prior_fn: Callable[[Array], Array],
    log_likelihood_fn: Callable[[Array], Array],
    initial_particles: Array,
    kernel,
    num_mcmc_steps: int = 10,
    target_ess: float = 0.5,
    max_stages: int = 100,
    dense_mass: bool = False,
    waste_free: int | None = None,
    resampling: str = "systematic",
) -> engine.Program:
    """Adaptive tempered SMC over flat particles ``(N, d)`` drawn from the prior, as an engine
    program (run it with :func:`run`, or in chunks with a host driver; then :func:`summarize`).

    Args:
        log_prior_fn, log_likelihood_fn: ``x (d,) -> scalar``; the target at temperature
            ``beta`` is ``log_prior + beta * log_likelihood``.
        initial_particles: ``(N, d)`` exact prior draws (on the space the densities use).
        kernel: an MCMC kernel object of :mod:`inference.mcmc.kernels` (RWMH, MALA, HMC).
        num_mcmc_steps: MCMC steps per particle per stage (ignored with ``waste_free``).
        target_ess: the ESS ratio the next temperature is chosen to hit, in (0, 1).
        max_stages: length of the static scan; a run needing more stages reports
            ``reached_one=False``.
        dense_mass: dense particle covariance as inverse mass matrix (else its diagonal).
        waste_free: ``P``: resample ``N / P`` particles and keep all ``P`` states of each
            chain (Dau & Chopin 2022); ``N`` must be divisible by ``P``.
        resampling: resampling scheme name.
    """
    n, d = initial_particles.shape
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"target_ess must be in (0, 1), got {target_ess}")
    if waste_free is not None and (waste_free < 2 or n % waste_free):
        raise ValueError(
            f"waste_free must be an integer >= 2 that divides the {n} particles; got {waste_free}"
        )
    init_step = 2.38 / jnp.sqrt(d) if kernel.name == "rwmh" else d ** (-0.25)
    dtype = initial_particles.dtype

    def tempered_logdensity(beta):
        return lambda x: log_prior_fn(x) + beta * log_likelihood_fn(x)

    def mcmc_chain(key, x, beta, step_size, inverse_mass, steps):
        """``steps`` kernel transitions from every row of ``x``; returns all states."""
        logdensity = tempered_logdensity(beta)
        states = jax.vmap(mcmc_base.init, in_axes=(0, None))(x, logdensity)

        def one(states, k):
            keys = jax.random.split(k, x.shape[0])
            states, info = jax.vmap(
                lambda kk, s: kernel.step(kk, s, logdensity, step_size, inverse_mass)
            )(keys, states)
            return states, (states.position, info.acceptance_rate)

        _, (path, acc) = jax.lax.scan(one, states, jax.random.split(key, steps))
        return path, jnp.mean(acc)

    def rejuvenate(key, particles, t):
        x, beta, log_step = particles["x"], particles["beta"][0], particles["log_step"][0]
        step_size = jnp.exp(log_step)
        inverse_mass = _covariance(x, dense_mass)
        if waste_free:
            m = n // waste_free
            k_perm, k_mcmc = jax.random.split(key)
            starts = jax.random.permutation(k_perm, x)[:m]
            path, acc = mcmc_chain(k_mcmc, starts, beta, step_size, inverse_mass, waste_free - 1)
            new_x = jnp.concatenate([starts, path.reshape(-1, d)], axis=0)
        else:
            path, acc = mcmc_chain(key, x, beta, step_size, inverse_mass, num_mcmc_steps)
            new_x = path[-1]
        new_log_step = log_step + (acc - kernel.target_accept)
        return {
            "x": new_x,
            "beta": particles["beta"],
            "log_step": jnp.full((n,), new_log_step, dtype),
            "acceptance": jnp.full((n,), acc, dtype),
            "used_step": jnp.full((n,), step_size, dtype),
        }

    def init(key, num):
        particles = {
            "x": initial_particles,
            "beta": jnp.zeros((num,), dtype),
            "log_step": jnp.full((num,), jnp.log(init_step), dtype),
            "acceptance": jnp.full((num,), jnp.nan, dtype),
            "used_step": jnp.full((num,), jnp.nan, dtype),
        }
        return particles, jnp.zeros((num,), dtype)

    def step(key, particles, t):
        beta = particles["beta"][0]
        done = beta >= 1.0

        def advance(particles):
            log_lik = jax.vmap(log_likelihood_fn)(particles["x"])
            new_beta = _next_temperature(log_lik, beta, target_ess)
            increment = (new_beta - beta) * log_lik
            increment = jnp.where(new_beta > beta, increment, 0.0)
            return {**particles, "beta": jnp.full((n,), new_beta, dtype)}, increment

        def stay(particles):
            return particles, jnp.zeros((n,), dtype)

        particles, log_g = jax.lax.cond(done, stay, advance, particles)
        # the move made at the start of this step (NaN if none): at the previous stage's
        # temperature; in the first step after beta = 1, the last move, at beta = 1
        aux = {
            "temperature": jnp.where(done, jnp.nan, particles["beta"][0]),
            "acceptance_rate": particles["acceptance"][0],
            "step_size": particles["used_step"][0],
        }
        particles = {
            **particles,
            "acceptance": jnp.full((n,), jnp.nan, dtype),
            "used_step": jnp.full((n,), jnp.nan, dtype),
        }
        return particles, log_g, aux

    return engine.Program(
        engine.FeynmanKac(init, step),
        num_steps=max_stages,
        resampling=resampling,
        ess_threshold=ALWAYS_BUT_UNIFORM,
        rejuvenate=rejuvenate,
        resample_at_end=True,
    )


def summarize(result: engine.SMCResult) -> TemperedResult:
    """The :class:`TemperedResult` of an engine result of :func:`program` (any number of
    completed stages; no-op stages after ``beta = 1`` read as NaN)."""
    temperature = result.aux["temperature"]
    used = ~jnp.isnan(temperature)
    num_stages = jnp.sum(used, axis=-1)

    def move_of_stage(recorded):
        """Step ``k + 1`` records the move at stage ``k``'s temperature: shift left by one."""
        pad = jnp.full(recorded.shape[:-1] + (1,), jnp.nan, recorded.dtype)
        return jnp.concatenate([recorded[..., 1:], pad], axis=-1)

    return TemperedResult(
        particles=result.particles["x"],
        log_evidence=result.log_evidence,
        num_stages=num_stages,
        reached_one=result.particles["beta"][..., 0] >= 1.0,
        temperature=temperature,
        ess=jnp.where(used, result.ess, jnp.nan),
        acceptance_rate=move_of_stage(result.aux["acceptance_rate"]),
        step_size=move_of_stage(result.aux["step_size"]),
        log_evidence_increments=jnp.where(used, result.log_evidence_increments, jnp.nan),
        failed=result.failed,
        nan_likelihoods=jnp.sum(result.nan_potentials, axis=-1),
    )


def run(
    key: Array,
    log_prior_fn: Callable[[Array], Array],
    log_likelihood_fn: Callable[[Array], Array],
    initial_particles: Array,
    kernel,
    **options,
) -> TemperedResult:
    """Run :func:`program` (same arguments after ``key``) in one scan and summarise it."""
    prog = program(log_prior_fn, log_likelihood_fn, initial_particles, kernel, **options)
    return summarize(engine.run_program(key, prog, initial_particles.shape[0]))
