"""NUTS after warm-up on N(0, 1): the variance is 1 within Monte Carlo error."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

from inference.mcmc import NUTS, warmup_final, warmup_init, warmup_step


def std_normal_logdensity(x):
    return -0.5 * jnp.sum(x**2)


def z_scores(draws, mean, var):
    """z-scores of the mean and of the mean of (x - mean)^2 (the variance), with ESS-based
    standard errors; the ESS is capped at the number of draws (conservative for antithetic
    NUTS chains, whose ESS estimate can exceed it)."""
    draws = np.asarray(draws, np.float64)
    n = draws.shape[0] * draws.shape[1]
    ess = np.minimum(effective_sample_size(draws), n)
    z_mean = (draws.mean((0, 1)) - mean) / np.sqrt(var / ess)
    sq = (draws - mean) ** 2
    ess_sq = np.minimum(effective_sample_size(sq), n)
    z_var = (sq.mean((0, 1)) - var) / (sq.std((0, 1)) / np.sqrt(ess_sq))
    return z_mean, z_var, ess, ess_sq


@functools.partial(jax.jit, static_argnames=("kernel", "num_warmup", "num_draws"))
def _warmup_and_sample(keys, kernel, num_warmup, num_draws):
    def chain(key):
        key_init, key_warm, key_run = jax.random.split(key, 3)
        x0 = jax.random.normal(key_init, (1,)) * 2.0
        ws = warmup_init(x0, std_normal_logdensity, kernel, num_warmup)

        def warm(w, k):
            return warmup_step(k, w, std_normal_logdensity, kernel, num_warmup)

        ws, _ = jax.lax.scan(warm, ws, jax.random.split(key_warm, num_warmup))
        state, step_size, inv = warmup_final(ws)

        def body(s, k):
            s, info = kernel.step(k, s, std_normal_logdensity, step_size, inv)
            return s, (s.position, info)

        _, out = jax.lax.scan(body, state, jax.random.split(key_run, num_draws))
        return out, step_size

    return jax.vmap(chain)(keys)


def test_nuts_standard_normal_variance_after_warmup():
    """4 chains x 2000 draws after warm-up on N(0, 1): the variance must be 1 within Monte Carlo
    error. Biased (rather than uniform-within-subtree / biased-between-subtree) multinomial
    sampling, or a wrong merge, shows up as a wrong variance."""
    (draws, info), step_size = _warmup_and_sample(
        jax.random.split(jax.random.key(2024), 4), NUTS(), 500, 2000
    )
    z_mean, z_var, ess, ess_sq = z_scores(draws, np.zeros(1), np.ones(1))
    print("NUTS N(0,1): var", float(np.var(draws)), "z_var", z_var, "ess_sq", ess_sq)
    print("  z_mean", z_mean, "ess", ess, "step size", step_size)
    assert np.all(ess_sq > 2000)
    assert abs(float(z_mean[0])) < 4 and abs(float(z_var[0])) < 4
    assert not info.diverging.any()


@pytest.mark.slow
def test_nuts_standard_normal_variance_long():
    (draws, _), _ = _warmup_and_sample(jax.random.split(jax.random.key(7), 8), NUTS(), 1000, 10000)
    z_mean, z_var, ess, ess_sq = z_scores(draws, np.zeros(1), np.ones(1))
    print("NUTS N(0,1) long: var", float(np.var(draws)), "z_var", z_var, "z_mean", z_mean, ess_sq)
    assert abs(float(z_mean[0])) < 4 and abs(float(z_var[0])) < 4


def test_nuts_deep_tree_path_draws_leaf_variates_per_leaf():
    """max_tree_depth > 12 draws each leaf's uniform from its own key instead of a table; the
    transition still runs and its diagnostics are consistent."""
    from inference.mcmc import nuts
    from inference.mcmc.base import init

    state = init(jnp.array([1.0, -0.5]), std_normal_logdensity)
    step = jax.jit(lambda k: nuts.step(k, state, std_normal_logdensity, 0.3, jnp.ones(2), 13))
    for seed in range(3):
        new, info = step(jax.random.key(seed))
        depth, n_steps = int(info.tree_depth), int(info.n_steps)
        assert 1 <= depth <= 13 and 2**depth - 1 <= n_steps <= 2 ** (depth + 1) - 1
        assert np.all(np.isfinite(np.asarray(new.position)))
