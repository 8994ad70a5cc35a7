"""NUTS warm-up end to end: dual averaging reaches the target acceptance, the adapted metric
is the target covariance, and dense adaptation beats diagonal on a correlated Gaussian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

from inference.mcmc import NUTS, warmup_final, warmup_init, warmup_step, window_schedule


@functools.partial(jax.jit, static_argnames=("kernel", "num_warmup", "num_draws"))
def _nuts_warmup_and_sample(keys, scales, kernel, num_warmup, num_draws):
    def logdensity(x):
        return -0.5 * jnp.sum((x / scales) ** 2)

    def chain(key):
        key_warm, key_run = jax.random.split(key)
        ws = warmup_init(jnp.ones_like(scales), logdensity, kernel, num_warmup)

        def warm(w, k):
            return warmup_step(k, w, logdensity, kernel, num_warmup)

        ws, winfo = jax.lax.scan(warm, ws, jax.random.split(key_warm, num_warmup))
        state, step_size, inv = warmup_final(ws)

        def body(s, k):
            s, info = kernel.step(k, s, logdensity, step_size, inv)
            return s, (s.position, info)

        _, (draws, info) = jax.lax.scan(body, state, jax.random.split(key_run, num_draws))
        return winfo, draws, info, step_size, inv

    return jax.vmap(chain)(keys)


def test_nuts_warmup_on_10d_gaussian_reaches_target_acceptance_and_variances():
    """10-d Gaussian, scales from 0.1 to 10 (variances 100x... 10^4x apart).

    * Dual averaging: the mean acceptance statistic over the last slow window, where the step
      size is adapted by dual averaging, is within 0.05 of the target 0.8.
    * After warm-up, sampling with eps_bar accepts at least the target (eps_bar averages
      log eps over the iterates, and acceptance is concave in eps, so it lands above target,
      as in Stan) and not absurdly more.
    * The adapted diagonal inverse mass matrix is the target variance within Monte Carlo
      error of a variance estimated from the n draws of the last window: relative standard
      deviation sqrt(2 / n_eff), with n_eff = n * (ESS / N of x^2 in the sampling phase).
    """
    scales = jnp.logspace(-1.0, 1.0, 10)
    num_warmup = 1000
    winfo, draws, info, step_size, inv = _nuts_warmup_and_sample(
        jax.random.split(jax.random.key(42), 4), scales, NUTS(), num_warmup, 300
    )
    (start, end) = window_schedule(num_warmup)[-1]
    warm_accept = float(winfo.acceptance_rate[:, start + 50 : end].mean())
    accept = float(info.acceptance_rate.mean())
    print("warm-up acceptance", warm_accept, "sampling acceptance", accept, "eps", step_size)
    assert abs(warm_accept - 0.8) < 0.05
    assert 0.75 < accept < 0.97
    ratio = np.asarray(inv) / np.asarray(scales) ** 2
    sq = np.asarray(draws, np.float64) ** 2
    efficiency = np.minimum(effective_sample_size(sq) / (sq.shape[0] * sq.shape[1]), 1.0)
    n_eff = (end - start) * efficiency
    print("adapted / true variance", ratio, "n_eff", n_eff)
    assert np.all(np.abs(ratio - 1.0) < 4.5 * np.sqrt(2.0 / n_eff))
    assert np.all(np.abs(ratio - 1.0) < 0.5)
    assert not info.diverging.any()


def _ill_conditioned_gaussian():
    s = jnp.array([1.0, 100.0])
    corr = jnp.array([[1.0, 0.99], [0.99, 1.0]])
    cov = corr * s[:, None] * s[None, :]
    return cov, jnp.linalg.inv(cov)


@functools.partial(jax.jit, static_argnames=("kernel", "num_warmup", "num_draws"))
def _run_ill_conditioned(keys, kernel, num_warmup, num_draws):
    _, prec = _ill_conditioned_gaussian()

    def logdensity(x):
        return -0.5 * x @ prec @ x

    def chain(key):
        key_warm, key_run = jax.random.split(key)
        ws = warmup_init(jnp.ones(2), logdensity, kernel, num_warmup)
        ws, _ = jax.lax.scan(
            lambda w, k: warmup_step(k, w, logdensity, kernel, num_warmup),
            ws,
            jax.random.split(key_warm, num_warmup),
        )
        state, step_size, inv = warmup_final(ws)

        def body(s, k):
            s, info = kernel.step(k, s, logdensity, step_size, inv)
            return s, (s.position, info.n_steps)

        _, out = jax.lax.scan(body, state, jax.random.split(key_run, num_draws))
        return out, inv

    return jax.vmap(chain)(keys)


@pytest.mark.slow
def test_dense_adaptation_beats_diagonal_on_correlated_gaussian():
    """corr 0.99, scales 1 and 100: the dense metric adapts to the covariance and the diagonal
    one to the marginal variances, each within Monte Carlo error of a (co)variance estimated
    from the 500 draws of the last window, and the dense metric gives many times the ESS per
    gradient of the diagonal one.

    The window's draws are autocorrelated, the diagonal metric's strongly (ESS ~0.15 per draw
    here), so the standard errors use ``n_eff = 500 * ESS(x^2) / draws`` from the sampling
    phase with the adapted metric, as in the 10-d test above, not ``n = 500``."""
    cov, _ = _ill_conditioned_gaussian()
    keys = jax.random.split(jax.random.key(3), 4)
    results = {}
    for dense in (True, False):
        (draws, n_steps), inv = _run_ill_conditioned(keys, NUTS(dense_mass=dense), 1000, 1000)
        draws = np.asarray(draws, np.float64)
        ess = effective_sample_size(draws)
        sq_efficiency = effective_sample_size(draws**2) / (draws.shape[0] * draws.shape[1])
        n_eff = 500 * float(np.min(np.minimum(sq_efficiency, 1.0)))
        results[dense] = (np.min(ess) / float(n_steps.sum()), np.asarray(inv), n_eff)
        print("dense" if dense else "diag", "ESS", ess, "per gradient", results[dense][0])
        print("  window n_eff", n_eff, "adapted", np.asarray(inv))
    # Adapted dense inverse mass matrix ~ covariance, entrywise within 4.5 standard errors of
    # a sample covariance: sqrt((S_ii S_jj + S_ij^2) / n_eff).
    cov = np.asarray(cov, np.float64)
    _, inv_dense, n_dense = results[True]
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_dense)
    for inv in inv_dense:
        assert np.all(np.abs(inv - cov) < 4.5 * se), inv
    # Diagonal adapted to the marginal variances: relative standard error sqrt(2 / n_eff).
    _, inv_diag, n_diag = results[False]
    for inv in inv_diag:
        assert np.all(np.abs(inv - np.diag(cov)) < 4.5 * np.sqrt(2 / n_diag) * np.diag(cov)), inv
    assert results[True][0] > 5 * results[False][0]
