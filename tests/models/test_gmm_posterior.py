"""Closed-form GMM posterior, evidence and twist against brute force (float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.sde import VESDE, VPSDE
from models import gmm_posterior as gp
from models.gmm import GaussianMixture


def _prior():
    means = jnp.array([[-2.0, 0.5], [1.5, -1.0], [0.5, 2.0]])
    covs = jnp.array(
        [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]], [[0.6, -0.2], [-0.2, 0.3]]]
    )
    return GaussianMixture(jnp.array([0.5, 0.3, 0.2]), means, covs)


def _grid(lim=9.0, n=601):
    g = np.linspace(-lim, lim, n)
    X1, X2 = np.meshgrid(g, g, indexing="ij")
    return np.stack([X1.ravel(), X2.ravel()], -1), (g[1] - g[0]) ** 2


def test_posterior_and_evidence_match_grid():
    with jax.enable_x64(True):
        prior = _prior()
        A = jnp.array([[1.0, 0.5]])
        y = jnp.array([0.7])
        sigma = 0.6
        pts, cell = _grid()
        log_joint = np.asarray(prior.logpdf(jnp.asarray(pts))) + (
            -0.5 * ((0.7 - pts @ np.array([1.0, 0.5])) / sigma) ** 2
            - math.log(sigma * math.sqrt(2 * math.pi))
        )
        m = log_joint.max()
        log_z = m + math.log(np.exp(log_joint - m).sum() * cell)
        np.testing.assert_allclose(float(gp.log_evidence(prior, A, y, sigma)), log_z, atol=1e-6)
        post = gp.posterior(prior, A, y, sigma)
        np.testing.assert_allclose(
            np.asarray(post.logpdf(jnp.asarray(pts[::97]))), log_joint[::97] - log_z, atol=1e-6
        )
        # a factor 2 on sigma^2 moves the evidence by far more than the tolerance
        assert abs(float(gp.log_evidence(prior, A, y, sigma * math.sqrt(2))) - log_z) > 1e-2


def test_noised_posterior_twist_identity():
    """p(y | x_t) = p_t(x_t | y) p(y) / p_t(x_t), for VP and VE at several times."""
    with jax.enable_x64(True):
        prior = _prior()
        A = jnp.array([[1.0, -0.5], [0.2, 1.0]])
        y = jnp.array([0.3, 1.1])
        sigma = jnp.array([0.4, 0.9])
        x = jax.random.normal(jax.random.PRNGKey(0), (50, 2)) * 2.0
        log_z = gp.log_evidence(prior, A, y, sigma)
        for sde in (VPSDE(), VESDE(sigma_max=20.0)):
            for t in (0.05, 0.3, 0.7):
                lhs = gp.log_twist(prior, sde, t, A, y, sigma, x)
                rhs = (
                    gp.noised_posterior(prior, sde, t, A, y, sigma).logpdf(x)
                    + log_z
                    - prior.noised(sde, t).logpdf(x)
                )
                np.testing.assert_allclose(np.asarray(lhs), np.asarray(rhs), atol=1e-8)


def test_twist_matches_monte_carlo():
    """p(y | x_t) = E[p(y | x_0) | x_t] by sampling the denoising posterior by self-normalised
    importance sampling from the prior."""
    with jax.enable_x64(True):
        prior = _prior()
        sde = VPSDE()
        A = jnp.array([[1.0, 0.5]])
        y = jnp.array([0.7])
        sigma = 0.6
        t = 0.4
        a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
        x_t = jnp.array([0.3, -0.2])
        x0 = prior.sample(jax.random.PRNGKey(1), 400_000)
        log_q = -0.5 * jnp.sum((x_t - a * x0) ** 2, -1) / s**2
        log_l = -0.5 * ((y[0] - x0 @ A[0]) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
        mc = jax.scipy.special.logsumexp(log_q + log_l) - jax.scipy.special.logsumexp(log_q)
        exact = gp.log_twist(prior, sde, t, A, y, sigma, x_t)
        assert abs(float(mc - exact)) < 0.02


def test_noiseless_posterior_satisfies_constraint():
    with jax.enable_x64(True):
        prior = _prior()
        A = jnp.array([[1.0, 0.5]])
        y = jnp.array([0.7])
        post = gp.posterior(prior, A, y, 0.0)
        x = post.sample(jax.random.PRNGKey(2), 1000)
        np.testing.assert_allclose(np.asarray(x @ A.T)[:, 0], 0.7, atol=1e-6)
        # the weights are the sigma -> 0 limit of the noisy ones
        np.testing.assert_allclose(post.weights, gp.posterior(prior, A, y, 1e-4).weights, atol=1e-4)
