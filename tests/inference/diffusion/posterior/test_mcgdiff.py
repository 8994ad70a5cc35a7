"""MCGdiff against the exact posterior of a GMM prior (noisy and noiseless, one jit)."""

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.posterior.mcgdiff import mcgdiff_grid, sample_mcgdiff, svd_observation
from models import gmm_posterior as gp

SIGMAS = (0.7, 0.0)


def _run(case, sigmas, H, steps=100):
    def one(key, sigma):
        return sample_mcgdiff(key, case.score_fn, case.sde, case.A, case.y, sigma, H.N, steps)

    keys = jax.random.split(jax.random.PRNGKey(0), H.SEEDS)
    f = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
    return f(keys, jnp.asarray(sigmas))


def test_grid_contains_tau(case2d):
    obs = svd_observation(case2d.A, case2d.y, 0.7)
    grid = np.asarray(mcgdiff_grid(case2d.sde, 10, obs))
    tau = float(case2d.sde.time_of_noise_level(obs.nu)[0])
    assert grid.shape == (12,) and np.all(np.diff(grid) <= 0)
    assert np.min(np.abs(grid - tau)) == 0.0
    ratio = case2d.sde.noise_level(tau) / obs.nu[0]
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-4)


def test_mcgdiff_matches_exact_posterior(case2d, H):
    res = _run(case2d, SIGMAS, H)
    for i, sigma in enumerate(SIGMAS):
        # the noiseless posterior is degenerate (no density to classify modes with): compare
        # with sigma = 0.01, below the t_min / kappa smoothing of the sampler
        post = gp.posterior(case2d.prior, case2d.A, case2d.y, max(sigma, 0.01))
        x = np.asarray(res.particles[i])
        assert np.all(np.isfinite(x))
        s = H.summarise(post, x)
        assert np.all(np.abs(s.z) < H.Z_MAX), (sigma, s.frac, s.ref, s.z)
        assert s.sw < H.SW_FACTOR * s.floor, (sigma, s.sw, s.floor)
        if sigma > 0:
            exact = float(gp.log_evidence(case2d.prior, case2d.A, case2d.y, sigma))
            err, z = H.evidence_z(res.log_evidence[i], exact)
            assert abs(err) < H.EVIDENCE_TOL and abs(z) < H.Z_MAX, (err, z)
        else:
            # noiseless: every particle satisfies A x = y up to the kappa / t_min smoothing
            resid = np.abs(x @ np.asarray(case2d.A).T - np.asarray(case2d.y))
            assert np.quantile(resid, 0.99) < 0.1, np.quantile(resid, 0.99)
