"""Multinomial NUTS: exact moments on Gaussians, trajectory diagnostics, metric branches."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size

from inference.mcmc import nuts
from inference.mcmc.base import init

MEAN = jnp.array([1.0, -2.0, 0.5])
SCALES = jnp.array([0.5, 2.0, 1.0])
CORR = jnp.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
COV = CORR * SCALES[:, None] * SCALES[None, :]
PREC = jnp.linalg.inv(COV)


def gaussian_logdensity(x):
    r = x - MEAN
    return -0.5 * r @ PREC @ r


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


@functools.partial(jax.jit, static_argnames=("num_draws",))
def _sample_fixed(keys, step_size, inverse_mass_matrix, num_draws):
    def chain(key):
        key_init, key_run = jax.random.split(key)
        x0 = MEAN + SCALES * jax.random.normal(key_init, (3,))

        def body(s, k):
            s, info = nuts.step(k, s, gaussian_logdensity, step_size, inverse_mass_matrix)
            return s, (s.position, info)

        return jax.lax.scan(
            body, init(x0, gaussian_logdensity), jax.random.split(key_run, num_draws)
        )[1]

    return jax.vmap(chain)(keys)


def test_nuts_samples_correlated_gaussian_with_dense_metric():
    draws, info = _sample_fixed(jax.random.split(jax.random.key(11), 4), 0.6, COV, 1500)
    z_mean, z_var, ess, _ = z_scores(draws[:, 100:], np.asarray(MEAN), np.diag(COV))
    print("NUTS dense fixed metric: z_mean", z_mean, "z_var", z_var, "ess", ess)
    assert np.all(ess > 1000)
    assert np.all(np.abs(z_mean) < 4) and np.all(np.abs(z_var) < 4), (z_mean, z_var)
    # Info is consistent: 2^depth - 1 <= n_steps <= 2^(depth + 1) - 1, acceptance in [0, 1].
    depth, n_steps = np.asarray(info.tree_depth), np.asarray(info.n_steps)
    assert np.all(n_steps >= 2**depth - 1) and np.all(n_steps <= 2 ** (depth + 1) - 1)
    acc = np.asarray(info.acceptance_rate)
    assert np.all((acc >= 0) & (acc <= 1)) and 0.6 < acc.mean() < 1.0
    assert not info.diverging.any()


def test_nuts_trajectory_length_and_divergence():
    """On a 50-d standard normal, started at a typical point, the orbit is nearly a circle and
    the generalised no-U-turn criterion stops the trajectory once it spans half a period
    (pi): with doubling, the total integration time is in (pi / 2, 2 pi). A huge step
    diverges at the first leaf; a tiny step has acceptance ~1."""
    d = 50

    @jax.jit
    def run(key, step_size):
        x0 = jax.random.normal(jax.random.fold_in(key, 1), (d,))
        state = init(x0, std_normal_logdensity)
        return nuts.step(key, state, std_normal_logdensity, step_size, jnp.ones(d))[1]

    for seed in range(3):
        info = run(jax.random.key(seed), 0.01)
        time = float(info.n_steps) * 0.01
        assert math.pi / 2 < time < 2 * math.pi, time
        assert 8 <= int(info.tree_depth) <= 10
        assert float(info.acceptance_rate) > 0.999
        assert not bool(info.diverging)
        big = run(jax.random.key(seed), 1e5)  # energy error ~ 1e10 > 1000
        assert bool(big.diverging) and int(big.n_steps) == 1 and int(big.tree_depth) == 0
        assert float(big.acceptance_rate) < 1e-6
