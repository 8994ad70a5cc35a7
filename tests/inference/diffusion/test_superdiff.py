"""SuperDiff OR / AND (Skreta et al. 2025, ICLR) with exact Gaussian-mixture scores.

R = 8 seeds vmapped in one jit call; SuperDiff particles are independent (no resampling), and
SEs are taken across seeds of the per-seed fractions.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion import superdiff as sd
from inference.diffusion.ito import ito_increment
from inference.diffusion.sde import VESDE, VPSDE
from models.gmm import GaussianMixture

R = 8
VE = VESDE(sigma_min=0.01, sigma_max=10.0)


def or_models():
    a = GaussianMixture(jnp.ones(1), jnp.array([[-2.5]]), jnp.array([0.2]))
    b = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[0.0], [2.5]]), jnp.array([0.2, 0.2]))
    return a, b


def and_models():
    up = GaussianMixture(jnp.ones(2) / 2, jnp.array([[-1.5, 1.5], [1.5, 1.5]]), jnp.full(2, 0.16))
    down = GaussianMixture(
        jnp.ones(2) / 2, jnp.array([[-1.5, -1.5], [1.5, -1.5]]), jnp.full(2, 0.5)
    )
    return up, down


@partial(jax.jit, static_argnames=("sde", "mode", "n", "steps", "which"))
def run(key, weights, sde, mode, n, steps, which="or"):
    a, b = or_models() if which == "or" else and_models()
    fns = [a.score_fn(sde), b.score_fn(sde)]
    log_q = [partial(lambda g, x, t: g.logpdf_t(x, t, sde), g) for g in (a, b)]

    def one(k, mode):
        res = sd.superdiff_sample(k, fns, sde, a.dim, n, steps, mode, weights, 1.0, log_q_T=log_q)
        t0 = sde.t_min
        exact = jnp.stack([a.logpdf_t(res.samples, t0, sde), b.logpdf_t(res.samples, t0, sde)])
        return res.samples, exact, res.kappa, res.kappa_last

    keys = jax.random.split(key, R)
    # the method and the fixed-kappa score average (baseline) in one compiled program
    return jax.vmap(one, (0, None))(keys, mode), jax.vmap(one, (0, None))(keys, "average")


def mean_se(per_seed):
    per_seed = np.asarray(per_seed, float)
    return per_seed.mean(), per_seed.std(ddof=1) / np.sqrt(per_seed.size)


@pytest.mark.parametrize("sde", [VPSDE(), VE], ids=["vp", "ve"])
def test_or_reproduces_mixture_weights(sde):
    """omega = (0.3, 0.7): the fraction of samples in model A's region (x < -1.25) is 0.3 and
    B's two modes get 0.35 each; the fixed score average (kappa = omega) is far off."""
    w = jnp.array([0.3, 0.7])
    key = jax.random.PRNGKey(0)
    (x, _, kappa, _), (xa, _, _, _) = run(key, w, sde, "or", 1000, 200)
    frac_a, se_a = mean_se(jnp.mean(x[..., 0] < -1.25, axis=-1))
    frac_b2, se_b2 = mean_se(jnp.mean(x[..., 0] > 1.25, axis=-1))
    base, base_se = mean_se(jnp.mean(xa[..., 0] < -1.25, axis=-1))
    print(
        f"{type(sde).__name__} OR: frac A {frac_a:.4f} +- {se_a:.4f} (exact 0.30), "
        f"B's right mode {frac_b2:.4f} +- {se_b2:.4f} (0.35); score average frac A "
        f"{base:.4f} +- {base_se:.4f}"
    )
    assert abs(frac_a - 0.3) < 4 * se_a
    assert abs(frac_b2 - 0.35) < 4 * se_b2
    assert abs(base - 0.3) > 8 * max(base_se, 1e-3)
    np.testing.assert_allclose(np.asarray(kappa).sum(-1), 1.0, atol=1e-5)


def test_and_equalises_densities():
    """AND keeps |log q_up - log q_down| at the samples smaller than the kappa = 1/2 average."""
    key = jax.random.PRNGKey(1)
    sde = VPSDE()
    (_, ex_and, kappa, kappa_last), (_, ex_avg, _, _) = run(key, None, sde, "and", 1000, 200, "and")
    gap_and = np.median(np.abs(np.asarray(ex_and[:, 0] - ex_and[:, 1])), axis=-1)
    gap_avg = np.median(np.abs(np.asarray(ex_avg[:, 0] - ex_avg[:, 1])), axis=-1)
    m_and, se_and = mean_se(gap_and)
    m_avg, se_avg = mean_se(gap_avg)
    print(
        f"median |log q1 - log q2|: AND {m_and:.3f} +- {se_and:.3f}; average {m_avg:.3f} +- "
        f"{se_avg:.3f}"
    )
    assert m_and + 4 * np.hypot(se_and, se_avg) < m_avg
    np.testing.assert_allclose(np.asarray(kappa).sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(kappa_last).sum(-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("m", [2, 3])
def test_and_kappa_solves_equal_density_system(m):
    """With kappa from :func:`and_kappa`, the Itô increments of all M models over the step are
    equal (Prop. 6), kappa sums to one, and for M = 2 it equals the closed form."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(2)
        n, d = 64, 4
        k1, k2, k3 = jax.random.split(key, 3)
        sde = VPSDE()
        t, h = 0.4, 1e-3
        x = jax.random.normal(k1, (n, d), jnp.float64)
        scores = jax.random.normal(k2, (m, n, d), jnp.float64)
        g2 = sde.diffusion(t) ** 2
        noise = jnp.sqrt(g2 * h) * jax.random.normal(k3, (n, d), jnp.float64)
        kappa = sd.and_kappa(scores, noise, g2, h)
        np.testing.assert_allclose(kappa.sum(-1), 1.0, atol=1e-12)
        drift = -sde.drift(x, t) + g2 * jnp.einsum("nm,mnd->nd", kappa, scores)
        x_next = x + h * drift + noise
        inc = ito_increment(sde, x, x_next, scores, t, h)  # (M, N)
        np.testing.assert_allclose(inc - inc[0], 0.0, atol=1e-9)
        if m == 2:
            closed = sd.and_kappa_two(scores[0], scores[1], noise, g2, h)
            np.testing.assert_allclose(kappa, closed, rtol=1e-9, atol=1e-9)
        # a wrong factor (e.g. dropping the 1/2) breaks the equality
        bad = kappa.at[:, 0].add(0.5).at[:, -1].add(-0.5)
        xb = x + h * (-sde.drift(x, t) + g2 * jnp.einsum("nm,mnd->nd", bad, scores)) + noise
        incb = ito_increment(sde, x, xb, scores, t, h)
        assert np.max(np.abs(incb - incb[0])) > 1e-4


def test_and_kappa_guard_and_or_kappa():
    s = jnp.ones((2, 3, 2))  # identical scores: |ds|^2 = 0
    k = sd.and_kappa(s, jnp.ones((3, 2)), 1.0, 0.01)
    np.testing.assert_allclose(k, 0.5)
    k3 = sd.and_kappa(jnp.ones((3, 3, 2)), jnp.ones((3, 2)), 1.0, 0.01)
    np.testing.assert_allclose(k3, 1.0 / 3, rtol=1e-6)
    k2 = sd.and_kappa_two(s[0], s[1], jnp.ones((3, 2)), 1.0, 0.01)
    np.testing.assert_allclose(k2, 0.5)
    ko = sd.or_kappa(jnp.array([[0.0, 0.0]]), jnp.log(jnp.array([0.3, 0.7])))
    np.testing.assert_allclose(ko, [[0.3, 0.7]], rtol=1e-6)
    ko = sd.or_kappa(jnp.array([[1.0, 0.0]]), jnp.zeros(2), temperature=100.0)
    np.testing.assert_allclose(ko, [[1.0, 0.0]], atol=1e-6)
