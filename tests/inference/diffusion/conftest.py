"""Shared Gaussian-mixture targets and sampler-checking helpers for the diffusion tests.

Acceptance rule of the sampler tests: the energy distance D^2 (U-statistic, centred at 0 under
the null) between N sampler outputs and N exact draws of p_{t_min} must lie below
``median + FACTOR (q95 - median)`` of the same statistic between two independent exact samples
of size N (30 replicates), FACTOR = 3: three times the null's upper 95% half-width. A factor-2
or sign error in the score lands an order of magnitude above it (negative controls).
"""

from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion import samplers as S
from inference.diffusion.metrics import energy_distance, energy_distance_null
from models.gmm import GaussianMixture

N = 2000
FACTOR = 3.0


@partial(jax.jit, static_argnames=("sde", "method", "n"))
def run_sampler(key, gmm, scale, grid, sde, method, n=N):
    """One compiled program per (sde, method, grid length); gmm and scale are traced."""

    def score_fn(x, t):
        return scale * gmm.score(x, t, sde)

    k0, k1 = jax.random.split(key)
    x_T = sde.prior_sample(k0, (n, gmm.dim))
    return S.get_sampler(method)(k1, score_fn, sde, x_T, grid)


def null_bound(gmm, n=N, reps=30):
    sample = jax.jit(lambda k, m: gmm.sample(k, m), static_argnums=1)
    null = np.asarray(energy_distance_null(sample, n, reps, jax.random.PRNGKey(123)))
    q95, med = float(np.quantile(null, 0.95)), float(np.median(null))
    bound = med + FACTOR * (q95 - med)
    print(f"exact-vs-exact D^2 at N={n}: median {med:.2e}, q95 {q95:.2e} -> bound {bound:.2e}")
    return bound


def ed_to_exact(gmm, sde, x, seed=99):
    ref = gmm.noised(sde, sde.t_min).sample(jax.random.PRNGKey(seed), x.shape[0])
    return float(energy_distance(x, ref))


def check_sampler(gmm, bound, sde, method, steps, grid="uniform", controls=(), seed=0):
    """Run ``method`` and assert D^2 < bound; each score scale in ``controls`` must fail."""
    g = S.time_grid(sde, steps, grid)
    x = run_sampler(jax.random.PRNGKey(seed), gmm, 1.0, g, sde, method)
    assert x.shape == (N, gmm.dim) and bool(jnp.all(jnp.isfinite(x)))
    ed = ed_to_exact(gmm, sde, x)
    print(
        f"{type(sde).__name__} {method} {steps} {grid} d={gmm.dim}: D^2 = {ed:.2e} "
        f"(bound {bound:.2e})"
    )
    assert ed < bound
    for scale in controls:
        xb = run_sampler(jax.random.PRNGKey(seed), gmm, scale, g, sde, method)
        xb = jnp.where(jnp.isfinite(xb), xb, 1e6)
        edb = ed_to_exact(gmm, sde, xb)
        print(f"   score x{scale}: D^2 = {edb:.2e}")
        assert not edb < bound, (method, scale, edb, bound)
    return ed


@pytest.fixture(scope="session")
def h():
    return SimpleNamespace(
        N=N,
        FACTOR=FACTOR,
        run_sampler=run_sampler,
        null_bound=null_bound,
        ed_to_exact=ed_to_exact,
        check_sampler=check_sampler,
    )


def make_gmm2() -> GaussianMixture:
    """Two unequal, correlated components in 2-d."""
    return GaussianMixture(
        jnp.array([0.3, 0.7]),
        jnp.array([[-2.0, 0.0], [2.0, 1.0]]),
        jnp.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]]),
    )


def make_gmm8() -> GaussianMixture:
    """Three components in 8-d with random SPD covariances (fixed seed)."""
    d, k = 8, 3
    key = jax.random.PRNGKey(42)
    k1, k2 = jax.random.split(key)
    means = 2.0 * jax.random.normal(k1, (k, d))
    a = 0.3 * jax.random.normal(k2, (k, d, d))
    covs = jnp.einsum("kij,klj->kil", a, a) + 0.2 * jnp.eye(d)
    return GaussianMixture(jnp.array([0.2, 0.3, 0.5]), means, covs)


@pytest.fixture(scope="session")
def gmm2():
    return make_gmm2()


@pytest.fixture(scope="session")
def gmm8():
    return make_gmm8()


@pytest.fixture(scope="session")
def bound2(gmm2):
    return null_bound(gmm2)


@pytest.fixture(scope="session")
def bound8(gmm8):
    return null_bound(gmm8)
