"""Warm-up: Stan's window schedule, dual averaging, Welford estimates, the step-size
heuristic, chunked scans, and the adapted step size / metric on Gaussians."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.mcmc import (
    MALA,
    adaptation,
    hmc,
    warmup_final,
    warmup_init,
    warmup_step,
    window_schedule,
)
from inference.mcmc.base import init


def test_window_schedule_matches_stan():
    assert window_schedule(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert [end for _, end in window_schedule(1000)] == [100, 150, 250, 450, 950]
    # Stan stretches the last window to the terminal buffer when the next one would not fit.
    assert window_schedule(2000)[-2:] == [(450, 850), (850, 1950)]
    assert window_schedule(200) == [(75, 100), (100, 150)]
    # Short warm-up: buffers become 15% / 10% of num_warmup, one slow window in between.
    assert window_schedule(100) == [(15, 90)]
    assert window_schedule(149) == [(22, 135)]
    assert window_schedule(19) == []


def test_dual_averaging_converges_to_target_on_a_known_acceptance_curve():
    """With acceptance alpha(eps) = exp(-eps) the target 0.8 is reached at eps* = -log 0.8.
    A flipped sign in the update would drive eps to 0 or infinity instead."""

    @jax.jit
    def run(eps0):
        def body(da, _):
            alpha = jnp.exp(-jnp.exp(da.log_step_size))
            return adaptation.dual_averaging_update(da, alpha, 0.8), None

        return jax.lax.scan(body, adaptation.dual_averaging_init(eps0), None, length=2000)[0]

    for eps0 in (1e-3, 1.0, 30.0):
        da = run(eps0)
        np.testing.assert_allclose(jnp.exp(da.log_step_size_avg), -np.log(0.8), rtol=0.05)
        np.testing.assert_allclose(jnp.exp(da.log_step_size), -np.log(0.8), rtol=0.05)


def test_robbins_monro_converges_to_target_on_a_known_acceptance_curve():
    """RWMH's rule (Andrieu & Thoms 2008): with alpha(eps) = exp(-eps) and target 0.234 the
    root is eps* = -log 0.234; from far on either side, with and without noise in alpha."""

    @functools.partial(jax.jit, static_argnums=1)
    def run(eps0, noisy):
        def body(da, key):
            alpha = jnp.exp(-jnp.exp(da.log_step_size))
            if noisy:  # a Bernoulli draw with that mean: as noisy as an acceptance can be
                alpha = jax.random.bernoulli(key, alpha).astype(alpha.dtype)
            return adaptation.robbins_monro_update(da, alpha, 0.234), None

        keys = jax.random.split(jax.random.PRNGKey(0), 4000)
        return jax.lax.scan(body, adaptation.dual_averaging_init(eps0), keys)[0]

    for eps0 in (1e-3, 1.0, 30.0):
        da = run(eps0, False)
        np.testing.assert_allclose(jnp.exp(da.log_step_size), -np.log(0.234), rtol=0.02)
        np.testing.assert_allclose(jnp.exp(da.log_step_size_avg), -np.log(0.234), rtol=0.02)
        da = run(eps0, True)
        np.testing.assert_allclose(jnp.exp(da.log_step_size_avg), -np.log(0.234), rtol=0.15)


def test_rwmh_and_mala_warmup_reach_their_target_acceptance():
    """Dual averaging left RWMH at 0.12-0.14 mean acceptance for a 0.234 target (0.03-0.30 per
    chain) on these targets, and MALA at 0.66-0.71 for 0.574; Robbins-Monro with a 200-step
    terminal buffer gives RWMH 0.231 and 0.237 (mean over 6 seeds of the 8-chain mean; its SD
    0.011) and MALA 0.594 on the 10-d target (3 seeds, all within 0.001)."""
    import numpyro.distributions as dist

    import ppl

    targets = {"3-d, scales 0.1 / 1 / 10": jnp.array([0.1, 1.0, 10.0]), "10-d": jnp.ones(10)}
    runs = [("rwmh", name, scale) for name, scale in targets.items()] + [
        ("mala", "10-d", targets["10-d"])
    ]
    for kernel, name, scale in runs:

        def model(scale=scale):
            ppl.sample("x", dist.Normal(jnp.zeros(scale.shape), scale).to_event(1))

        post = ppl.mcmc(
            model, kernel=kernel, chains=8, warmup=1000, draws=1000, seed=0, progress_bar=False
        )
        acceptance = np.asarray(post.stats["acceptance_rate"]).mean()
        target = {"rwmh": 0.234, "mala": 0.574}[kernel]
        assert abs(acceptance - target) < 0.05, (kernel, name, acceptance)
    # no warm-up: RWMH at the optimal scaling itself (the doubling heuristic is a coin toss)
    post = ppl.mcmc(model, kernel="rwmh", chains=1, warmup=0, draws=5, progress_bar=False)
    np.testing.assert_allclose(post.stats["step_size"], 2.38 / np.sqrt(10), rtol=1e-6)


def test_dual_averaging_first_iterate_matches_hoffman_gelman():
    """Algorithm 5 by hand for t = 1: H1 = (delta - alpha) / (1 + t0), log eps1 = mu - H1/gamma,
    log eps_bar1 = log eps1 (weight 1^-kappa = 1)."""
    da = adaptation.dual_averaging_init(0.5)
    np.testing.assert_allclose(da.mu, np.log(5.0), rtol=1e-6)
    da = adaptation.dual_averaging_update(da, 0.3, 0.8)
    h1 = (0.8 - 0.3) / 11.0
    np.testing.assert_allclose(da.h_bar, h1, rtol=1e-6)
    np.testing.assert_allclose(da.log_step_size, np.log(5.0) - h1 / 0.05, rtol=1e-6)
    np.testing.assert_allclose(da.log_step_size_avg, da.log_step_size, rtol=1e-6)


@pytest.mark.parametrize("dense", [False, True])
def test_welford_covariance_is_stan_regularised_sample_covariance(dense):
    x = np.random.default_rng(0).normal(size=(40, 3)) * np.array([1.0, 3.0, 0.2]) + 1.0
    ws = adaptation.welford_init(3, dense)
    for row in x:
        ws = adaptation.welford_update(ws, jnp.asarray(row, jnp.float32))
    cov = np.cov(x, rowvar=False)
    n = 40
    expected = n / (n + 5.0) * cov + 1e-3 * 5.0 / (n + 5.0) * np.eye(3)
    got = np.asarray(adaptation.welford_covariance(ws))
    np.testing.assert_allclose(got, expected if dense else np.diag(expected), rtol=1e-4)


def test_find_reasonable_step_size_brackets_acceptance_one_half():
    """Hoffman & Gelman alg. 4 stops at the first power-of-2 multiple of eps0 where the one-step
    acceptance ratio crosses 1/2: from either side, r(eps) and r(eps / 2) (or r(2 eps)) lie on
    opposite sides of 1/2."""
    scales = jnp.array([0.1, 1.0, 1.0, 1.0])

    def logdensity(x):
        return -0.5 * jnp.sum((x / scales) ** 2)

    state = init(jnp.array([0.05, 1.0, -0.5, 0.3]), logdensity)
    inv = jnp.ones(4)
    key = jax.random.key(5)

    @jax.jit
    def find(eps0):
        return adaptation.find_reasonable_step_size(
            key, state, logdensity, hmc.log_accept_ratio, eps0, inv
        )

    def log_r(eps):
        return float(hmc.log_accept_ratio(key, state, logdensity, eps, inv))

    for eps0 in (1e-4, 1e3):
        eps = float(find(eps0))
        assert 1e-3 < eps < 1.0, eps  # the smallest scale is 0.1
        k = np.log2(eps / eps0)
        assert abs(k - round(k)) < 1e-4  # a power-of-2 multiple of eps0
        if eps0 < eps:  # doubled until r(eps) < 1/2
            assert log_r(eps) <= np.log(0.5) < log_r(eps / 2)
        else:  # halved until r(eps) > 1/2
            assert log_r(eps) >= np.log(0.5) > log_r(2 * eps)
    # Inactive: returns the input untouched.
    np.testing.assert_allclose(
        adaptation.find_reasonable_step_size(
            key, state, logdensity, hmc.log_accept_ratio, 0.3, inv, active=False
        ),
        0.3,
    )


def _corr_gaussian(x):
    s = jnp.array([1.0, 3.0])
    r = 0.9
    z0, z1 = x[0] / s[0], x[1] / s[1]
    return -0.5 * (z0**2 - 2 * r * z0 * z1 + z1**2) / (1 - r**2)


@functools.partial(jax.jit, static_argnames=("num_steps", "num_warmup"))
def _warmup_chunk(keys, wstate, num_steps, num_warmup):
    kernel = MALA(dense_mass=True)

    def body(w, k):
        return warmup_step(k, w, _corr_gaussian, kernel, num_warmup)

    return jax.lax.scan(body, wstate, keys)


def test_warmup_scan_can_be_split_into_chunks():
    """Warm-up over 120 iterations in one scan equals two scans of 60: every schedule decision
    is a function of the step counter carried in the state."""
    num_warmup = 120  # short warm-up: one slow window [18, 108)
    keys = jax.random.split(jax.random.key(0), num_warmup)
    w0 = warmup_init(jnp.array([3.0, -2.0]), _corr_gaussian, MALA(dense_mass=True), num_warmup)
    whole, _ = _warmup_chunk(keys, w0, num_warmup, num_warmup)
    half, _ = _warmup_chunk(keys[:60], w0, 60, num_warmup)
    half, _ = _warmup_chunk(keys[60:], half, 60, num_warmup)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(half), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(whole.step) == num_warmup
    # The metric was updated once, away from the identity, to a dense matrix.
    state, step_size, inv = warmup_final(whole)
    assert inv.shape == (2, 2) and abs(float(inv[0, 1])) > 0.1
    assert np.isfinite(float(step_size)) and float(step_size) > 0
