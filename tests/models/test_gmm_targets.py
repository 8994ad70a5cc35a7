"""Exact composed-target ground truth (brief Sec. 5) against 1-d quadrature and known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.sde import VESDE, VPSDE
from models import gmm_targets as gt
from models.gmm import GaussianMixture


def bimodal():
    return GaussianMixture(
        jnp.array([0.3, 0.7]), jnp.array([[-1.5], [1.5]]), jnp.array([0.16, 0.16])
    )


def test_tempered_bimodal_reference_value():
    g = bimodal()
    assert gt.prob_positive_1d(gt.tempered_separated(g, 3.0)) == pytest.approx(0.927027, abs=2e-6)
    exact, log_z = gt.power_gmm(g, 3)
    grid = gt.grid_summary_1d(lambda x: 3.0 * g.logpdf(x))
    assert gt.prob_positive_1d(exact) == pytest.approx(grid["p_pos"], abs=1e-5)
    assert float(exact.mean[0]) == pytest.approx(grid["mean"], abs=1e-4)
    assert float(log_z) == pytest.approx(grid["log_z"], abs=1e-4)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.7])
def test_product_of_noised_mixtures_matches_quadrature(sde, t):
    """float64: the quadrature reference is accurate to ~1e-7."""
    with jax.enable_x64(True):
        p1 = GaussianMixture(
            jnp.array([0.5, 0.5]), jnp.array([[-1.5], [1.5]]), jnp.array([0.3, 0.3])
        )
        p2 = GaussianMixture(
            jnp.array([0.8, 0.2]), jnp.array([[-1.0], [2.0]]), jnp.array([0.5, 0.5])
        )
        q1, q2 = p1.noised(sde, t), p2.noised(sde, t)
        prod, log_z = gt.product_gmm(q1, q2)
        lim = 40.0 if isinstance(sde, VESDE) else 10.0
        grid = gt.grid_summary_1d(lambda x: q1.logpdf(x) + q2.logpdf(x), -lim, lim, 400_001)
        assert gt.prob_positive_1d(prod) == pytest.approx(grid["p_pos"], abs=1e-5)
        assert float(prod.mean[0]) == pytest.approx(grid["mean"], abs=1e-4)
        assert float(prod.cov[0, 0]) == pytest.approx(grid["var"], rel=1e-4)
        assert float(log_z) == pytest.approx(grid["log_z"], abs=1e-4)
        if t == 0.0:  # brief reference values
            assert gt.prob_positive_1d(prod) == pytest.approx(0.2139, abs=1e-4)
            assert float(prod.mean[0]) == pytest.approx(-0.6889, abs=1e-4)


def test_up_down_product_2d():
    up = GaussianMixture(jnp.ones(2) / 2, jnp.array([[-1.5, 1.5], [1.5, 1.5]]), jnp.full(2, 0.16))
    down = GaussianMixture(
        jnp.ones(2) / 2, jnp.array([[-1.5, -1.5], [1.5, -1.5]]), jnp.full(2, 0.16)
    )
    prod, _ = gt.product_gmm(up, down)
    w = np.asarray(prod.weights)
    means = np.asarray(prod.means)
    main = np.abs(means[:, 0]) > 1.0  # the same-side pairs (+-1.5, 0)
    np.testing.assert_allclose(w[main], 0.5, atol=1e-5)
    np.testing.assert_allclose(means[main][:, 1], 0.0, atol=1e-6)
    covs = np.asarray(prod.covs)[main]
    np.testing.assert_allclose(covs, np.broadcast_to(0.08 * np.eye(2), covs.shape), rtol=1e-5)
    ratio = w[~main].max() / w[main].max()
    assert ratio == pytest.approx(np.exp(-14.0625), rel=1e-3)


def test_geometric_gaussian_and_normalisability():
    m, c = gt.geometric_gaussian([0.0], [[1.0]], [2.0], [[0.5]], 0.5)
    lp = lambda x: 0.5 * (-0.5 * x[:, 0] ** 2) + 0.5 * (-0.5 * (x[:, 0] - 2) ** 2 / 0.5)  # noqa: E731
    grid = gt.grid_summary_1d(lp)
    assert m[0] == pytest.approx(grid["mean"], abs=1e-5)
    assert c[0, 0] == pytest.approx(grid["var"], rel=1e-4)
    with pytest.raises(ValueError, match="normalisable"):
        gt.geometric_gaussian([0.0], [[0.5]], [2.0], [[1.0]], 3.0)


@pytest.mark.parametrize("w,p_pos,mean", [(2.0, 0.9403, 0.6450), (4.0, 0.9892, 0.7697)])
def test_cfg_rejection_sampler(w, p_pos, mean):
    pu = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-0.5], [0.5]]), jnp.array([0.25, 0.25]))
    grid = gt.grid_summary_1d(
        lambda x: (
            (1 - w) * pu.logpdf(x)
            + w * GaussianMixture(jnp.ones(1), pu.means[1:], pu.covs[1:]).logpdf(x)
        )
    )
    assert grid["p_pos"] == pytest.approx(p_pos, abs=1e-4)
    assert grid["mean"] == pytest.approx(mean, abs=1e-4)
    n = 40_000
    x = np.asarray(gt.cfg_rejection_sample(jax.random.PRNGKey(0), pu, 1, w, n))[:, 0]
    se = x.std() / np.sqrt(n)
    assert abs(x.mean() - mean) < 4 * se
    with pytest.raises(ValueError):
        gt.cfg_rejection_sample(jax.random.PRNGKey(0), pu, 1, 0.5, 10)


def test_exact_prior_log_density_and_score():
    sde = VPSDE()
    g = bimodal()
    p = gt.exact_prior(g, sde)
    x = jnp.linspace(-2, 2, 5)[:, None]
    np.testing.assert_allclose(p.log_density(x, 0.3), g.logpdf_t(x, 0.3, sde), rtol=1e-6)
    np.testing.assert_allclose(p.score(x, 0.3), g.score(x, 0.3, sde), rtol=1e-6)
    leaves, tree = jax.tree_util.tree_flatten(p)
    q = jax.tree_util.tree_unflatten(tree, leaves)
    np.testing.assert_allclose(q.log_density(x, 0.3), p.log_density(x, 0.3), rtol=1e-6)


def test_exact_prior_goes_through_jit_and_vmap():
    """Its pytree rebuild re-ran the constructor, whose checks call the score concretely:
    ``jit`` of a function of the prior raised a tracer error."""
    g = GaussianMixture(jnp.array([0.4, 0.6]), jnp.array([[-1.0], [1.0]]), jnp.array([0.1, 0.2]))
    prior = gt.exact_prior(g, VPSDE())
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    jitted = jax.jit(lambda p, x: (p.log_density(x, 0.3), p.score_fn(x, 0.3)))(prior, x)
    np.testing.assert_allclose(jitted[0], g.logpdf_t(x, 0.3, VPSDE()), rtol=1e-6)
    np.testing.assert_allclose(jitted[1], g.score(x, 0.3, VPSDE()), rtol=1e-6)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), prior)
    assert jax.vmap(lambda p: p.log_density(x, 0.3))(stacked).shape == (2, 5)


def test_target_helpers_refuse_what_they_cannot_answer():
    g2 = GaussianMixture(jnp.ones(2), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.ones(2))
    with pytest.raises(ValueError, match="needs a 1-d mixture"):
        gt.prob_positive_1d(g2)
    for index in (-1, 2):
        with pytest.raises(ValueError, match=r"cond_index must be in \[0, 2\)"):
            gt.cfg_rejection_sample(jax.random.PRNGKey(0), g2, index, 2.0, 10)
