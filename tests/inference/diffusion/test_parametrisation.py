"""Score <-> epsilon <-> x0 conversions and Tweedie's formula against the exact GMM
denoising posterior mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion import parametrisation as P
from inference.diffusion.sde import VESDE, VPSDE, SubVPSDE
from models.gmm import GaussianMixture

SDES = [VPSDE(), SubVPSDE(), VESDE()]


def exact_posterior_mean(gmm, x, t, sde):
    """E[x0|x_t] = sum_k r_k (mu_k + a S_k C_k^{-1} (x - a mu_k)), C_k = a^2 S_k + s^2 I."""
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    covs = gmm.covs
    C = a**2 * covs + s**2 * jnp.eye(gmm.dim)
    r = jax.nn.softmax(gmm.noised(sde, t).component_logpdf(x), axis=-1)
    diff = x[:, None, :] - a * gmm.means
    sol = jnp.linalg.solve(C[None], diff[..., None])[..., 0]
    comp = gmm.means + a * jnp.einsum("kij,nkj->nki", covs, sol)
    return jnp.einsum("nk,nki->ni", r, comp)


@pytest.mark.parametrize("sde", SDES, ids=["vp", "subvp", "ve"])
def test_tweedie_matches_exact_posterior_mean(sde, gmm2):
    with jax.enable_x64(True):
        g = GaussianMixture(
            *(jnp.asarray(a, jnp.float64) for a in (gmm2.weights, gmm2.means, gmm2.covs))
        )
        x = jax.random.normal(jax.random.PRNGKey(0), (16, 2), jnp.float64) * 2.0
        for t in (0.05, 0.3, 0.7):
            score = g.score(x, t, sde)
            np.testing.assert_allclose(
                P.tweedie(x, score, t, sde), exact_posterior_mean(g, x, t, sde), rtol=1e-10
            )


def test_round_trips():
    sde = VPSDE()
    t = 0.4
    key = jax.random.PRNGKey(0)
    x, s = jax.random.normal(key, (2, 5, 3))
    eps = P.score_to_eps(s, t, sde)
    np.testing.assert_allclose(P.eps_to_score(eps, t, sde), s, rtol=1e-5)
    x0 = P.score_to_x0(x, s, t, sde)
    np.testing.assert_allclose(P.x0_to_score(x, x0, t, sde), s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(P.eps_to_x0(x, eps, t, sde), x0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(P.x0_to_eps(x, x0, t, sde), eps, rtol=1e-4, atol=1e-5)
    # eps = -sigma s exactly (a sign error fails)
    np.testing.assert_allclose(eps, -sde.marginal_std(t) * s, rtol=1e-6)
    sf = P.score_fn_from_eps_fn(lambda y, u: P.score_to_eps(y * 0 + s, u, sde), sde)
    np.testing.assert_allclose(sf(x, t), s, rtol=1e-5)
    sf2 = P.score_fn_from_denoiser(lambda y, u: P.score_to_x0(y, s, u, sde), sde)
    np.testing.assert_allclose(sf2(x, t), s, rtol=1e-4, atol=1e-5)
