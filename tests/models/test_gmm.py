"""GaussianMixture: density vs an independent formula, sampling moments, exact noised score
vs autodiff of the noised log density, and the noised parameters under each SDE."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.sde import EDMSDE, VESDE, VPSDE, SubVPSDE
from models.gmm import GaussianMixture

W = np.array([0.3, 0.7])
MU = np.array([[-2.0, 0.0], [2.0, 1.0]])
COV = np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.4]]])


def naive_logpdf(x, w, mu, cov):
    out = []
    for k in range(len(w)):
        d = x - mu[k]
        q = d @ np.linalg.inv(cov[k]) @ d
        out.append(
            math.log(w[k])
            - 0.5 * q
            - 0.5 * math.log(np.linalg.det(2 * math.pi * np.asarray(cov[k])))
        )
    return np.logaddexp.reduce(out)


def test_logpdf_matches_naive_formula():
    with jax.enable_x64(True):
        g = GaussianMixture(W, MU, COV)
        x = np.array([[0.3, -0.2], [-1.5, 0.5], [2.5, 1.0]])
        expected = [naive_logpdf(xi, np.asarray(W), np.asarray(MU), np.asarray(COV)) for xi in x]
        np.testing.assert_allclose(g.logpdf(x), expected, rtol=1e-12)
        np.testing.assert_allclose(g.covs, COV, atol=1e-12)


def test_sample_moments():
    g = GaussianMixture(W, MU, COV)
    n = 40000
    x = g.sample(jax.random.PRNGKey(0), n)
    assert x.shape == (n, 2)
    # SE of the mean = sqrt(diag cov / n) <= 0.01; allow 4 SE
    se = np.sqrt(np.diag(np.asarray(g.cov)) / n)
    np.testing.assert_array_less(np.abs(np.asarray(x.mean(0) - g.mean)), 4 * se)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), g.cov, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), EDMSDE()], ids=str)
def test_noised_parameters_and_score(sde):
    with jax.enable_x64(True):
        g = GaussianMixture(W, MU, COV)
        t = sde.t_min + 0.3 * (sde.t_max - sde.t_min)
        a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
        n = g.noised(sde, t)
        np.testing.assert_allclose(n.means, a * MU, rtol=1e-12)
        np.testing.assert_allclose(n.covs, a**2 * COV + s**2 * jnp.eye(2), rtol=1e-10)
        x = jnp.array([[0.3, -0.2], [-1.5, 0.5], [4.0, -3.0]]) * (1 + s)
        auto = jax.vmap(jax.grad(lambda y: g.logpdf_t(y, t, sde)))(x)
        np.testing.assert_allclose(g.score(x, t, sde), auto, rtol=1e-9, atol=1e-12)
        # at t = 0 the noised mixture is the mixture itself (VP/sub-VP/VE)
        if not isinstance(sde, EDMSDE):
            np.testing.assert_allclose(g.logpdf_t(x, 0.0, sde), g.logpdf(x), rtol=1e-10)


def test_jit_vmap_and_validation():
    g = GaussianMixture(W, MU, jnp.array([0.3, 0.5]))  # isotropic variances
    sde = VPSDE()
    f = jax.jit(lambda gm, x, t: gm.score(x, t, sde))
    x = jnp.ones((4, 2))
    assert f(g, x, 0.5).shape == (4, 2)
    ts = jnp.linspace(0.1, 0.9, 3)
    assert jax.vmap(lambda t: g.logpdf_t(x, t, sde))(ts).shape == (3, 4)
    with pytest.raises(ValueError, match="t must lie"):
        g.noised(sde, 2.0)
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(W, jnp.zeros(3), COV)


def test_diffusion_prior():
    from ppl.diffusion import DiffusionPrior

    g = GaussianMixture(W, MU, COV)
    p = g.diffusion_prior(VESDE())
    assert isinstance(p, DiffusionPrior)
    assert p.event_shape == (2,)
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(p.score_fn(x, 0.5), g.score(x, 0.5, VESDE()))


def test_integer_parameters_and_bad_ones_are_named():
    """Integer means used to cast the weights to int (0 / 0: every density NaN, no error)."""
    g = GaussianMixture([1, 1], [[-1], [1]], [1, 1])
    assert jnp.issubdtype(g.means.dtype, jnp.floating)
    x = np.array([[0.3]])
    exact = np.log(0.5 * np.exp(-0.5 * 1.3**2) + 0.5 * np.exp(-0.5 * 0.7**2)) - 0.5 * np.log(
        2 * np.pi
    )
    np.testing.assert_allclose(g.logpdf(x), [exact], rtol=1e-6)
    with pytest.raises(ValueError, match="weights must be finite, >= 0"):
        GaussianMixture([1.0, -1.0], MU, COV)
    with pytest.raises(ValueError, match="weights must be finite, >= 0"):
        GaussianMixture([0.0, 0.0], MU, COV)
    with pytest.raises(ValueError, match=r"positive definite.*component\(s\) \[1\]"):
        GaussianMixture(W, MU, [0.5, -0.1])


def test_shapes_that_used_to_broadcast_are_refused():
    """A time per particle rescaled the components (wrong scores); an ``x`` with another
    last axis was broadcast against the means."""
    g = GaussianMixture(W, MU, COV)
    with pytest.raises(ValueError, match="t must be one time"):
        g.score(jnp.ones((3, 2)), jnp.array([0.1, 0.2, 0.3]), VPSDE())
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        g.logpdf(jnp.ones((3, 1)))
    # the supported way to a time per particle: vmap, which equals the row-by-row scores
    ts = jnp.array([0.1, 0.5, 0.9])
    x = jnp.array([[0.3, -0.2], [-1.5, 0.5], [1.0, 1.0]])
    per_row = jax.vmap(lambda xi, ti: g.score(xi, ti, VPSDE()))(x, ts)
    for i in range(3):
        np.testing.assert_allclose(per_row[i], g.score(x[i], float(ts[i]), VPSDE()), rtol=1e-6)
