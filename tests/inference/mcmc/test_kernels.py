"""Each kernel, with a fixed step size and mass matrix, samples a correlated Gaussian.

Tolerances are Monte Carlo standard errors from the effective sample size: the mean of each
coordinate and the mean of its centred square (the variance) must be within 4 standard errors
of the truth. The target is correlated and its scales differ, so using M instead of M^{-1}
anywhere, a wrong sign in an acceptance ratio or a factor 2 in a kinetic energy biases the
variance by far more than 4 standard errors at these sample sizes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size

from inference.mcmc import HMC, MALA, RWMH, hmc, integrators, mala, metrics, nuts, rwmh
from inference.mcmc.base import init

MEAN = jnp.array([1.0, -2.0, 0.5])
SCALES = jnp.array([0.5, 2.0, 1.0])
CORR = jnp.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
COV = CORR * SCALES[:, None] * SCALES[None, :]
PREC = jnp.linalg.inv(COV)


def gaussian_logdensity(x, mean=MEAN, prec=PREC):
    r = x - mean
    return -0.5 * r @ prec @ r


@functools.partial(jax.jit, static_argnames=("kernel", "num_draws"))
def sample(keys, kernel, step_size, inverse_mass_matrix, num_draws):
    """Run ``len(keys)`` chains of ``kernel`` from over-dispersed starts; return draws, infos."""

    def chain(key):
        key_init, key_run = jax.random.split(key)
        x0 = MEAN + 2.0 * SCALES * jax.random.normal(key_init, MEAN.shape)
        state = kernel.init(x0, gaussian_logdensity)

        def body(s, k):
            s, info = kernel.step(k, s, gaussian_logdensity, step_size, inverse_mass_matrix)
            return s, (s.position, info)

        return jax.lax.scan(body, state, jax.random.split(key_run, num_draws))[1]

    return jax.vmap(chain)(keys)


def z_scores(draws, mean, var):
    """z-scores of the sample mean and of the sample mean of (x - mean)^2, ESS-based.

    The ESS is capped at the number of draws: antithetic chains (HMC, NUTS) can have a larger
    true ESS, but its estimate is noisy, so the cap keeps the standard error conservative.
    """
    draws = np.asarray(draws, np.float64)
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    n = draws.shape[0] * draws.shape[1]
    ess = np.minimum(effective_sample_size(draws), n)
    z_mean = (draws.mean((0, 1)) - mean) / np.sqrt(var / ess)
    sq = (draws - mean) ** 2
    ess_sq = np.minimum(effective_sample_size(sq), n)
    z_var = (sq.mean((0, 1)) - var) / (sq.std((0, 1)) / np.sqrt(ess_sq))
    return z_mean, z_var, ess, ess_sq


CASES = {
    # kernel, step size, inverse mass matrix, draws per chain, burn-in. The other metric
    # branch of each kernel is checked against this one in test_diagonal_and_dense_branches_agree.
    "rwmh-dense": (RWMH(), 1.5, COV, 6000, 500),
    "mala-dense": (MALA(), 0.9, COV, 3000, 300),
    "hmc-diag-jitter": (HMC(num_steps=7, step_size_jitter=0.2), 0.25, jnp.diag(COV), 1500, 100),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_samples_gaussian(case):
    kernel, step_size, inverse_mass_matrix, num_draws, burn = CASES[case]
    # unsafe_rbg keys: same statistics for this purpose, a third of threefry's compile time.
    keys = jax.random.split(jax.random.key(list(CASES).index(case), impl="unsafe_rbg"), 4)
    draws, info = sample(keys, kernel, step_size, inverse_mass_matrix, num_draws)
    draws = draws[:, burn:]
    z_mean, z_var, ess, ess_sq = z_scores(draws, MEAN, jnp.diag(COV))
    accept = float(info.acceptance_rate.mean())
    assert 0.15 < accept < 0.99, accept
    assert np.all(ess > 300), ess
    assert np.all(np.abs(z_mean) < 4), (z_mean, ess)
    assert np.all(np.abs(z_var) < 4), (z_var, ess_sq)
    assert info.n_steps.dtype == jnp.int32
    assert not bool(info.diverging.any())


@pytest.mark.parametrize(
    "module, static",
    [(rwmh, {}), (mala, {}), (hmc, {"num_integration_steps": 3})],
    ids=["rwmh", "mala", "hmc"],
)
def test_diagonal_and_dense_branches_agree(module, static):
    """A dense inverse mass matrix diag(v) must give exactly the transition of the vector v
    (the NUTS version is in test_nuts_metric.py)."""
    v = jnp.array([0.3, 2.0, 1.0])
    state = init(jnp.array([0.2, -1.0, 0.4]), gaussian_logdensity)

    @jax.jit
    def both(key):
        a = module.step(key, state, gaussian_logdensity, 0.4, v, **static)
        b = module.step(key, state, gaussian_logdensity, 0.4, jnp.diag(v), **static)
        return a, b

    for seed in range(3):
        (sa, ia), (sb, ib) = both(jax.random.key(seed))
        np.testing.assert_allclose(sa.position, sb.position, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ia.acceptance_rate, ib.acceptance_rate, rtol=1e-4, atol=1e-6)
        assert int(ia.n_steps) == int(ib.n_steps)


def test_mala_equals_one_step_hmc():
    """Preconditioned MALA is HMC with one leapfrog step: the MH log ratios coincide."""
    state = init(jnp.array([0.2, -1.0, 0.4]), gaussian_logdensity)

    @jax.jit
    def ratios(key):
        # MALA noise xi ~ N(0, M^-1) (drawn from the same key) is the HMC momentum p = M xi.
        xi = metrics.sample_noise(key, COV)
        step = 0.5
        z0 = integrators.from_state(state, jnp.linalg.solve(COV, xi))
        z1 = integrators.leapfrog(z0, gaussian_logdensity, step, COV)
        log_hmc = integrators.hamiltonian(z0, COV) - integrators.hamiltonian(z1, COV)
        log_mala = mala.log_accept_ratio(key, state, gaussian_logdensity, step, COV)
        return log_hmc, log_mala

    for seed in range(3):
        log_hmc, log_mala = ratios(jax.random.key(seed))
        np.testing.assert_allclose(log_mala, log_hmc, rtol=1e-3, atol=1e-4)


def test_rejects_bad_inverse_mass_matrix_shape():
    state = init(jnp.zeros(3), gaussian_logdensity)
    for module in (rwmh, mala, hmc, nuts):
        with pytest.raises(ValueError, match="inverse_mass_matrix"):
            module.step(jax.random.key(0), state, gaussian_logdensity, 0.1, jnp.ones((3, 3, 3)))
