"""DPS is the biased baseline: on the bimodal GMM case its mode masses are off by many
standard errors (the consistent samplers pass the same test in test_mcgdiff/test_tds)."""

import jax
import numpy as np

from inference.diffusion.posterior.dps import sample_dps
from models import gmm_posterior as gp

SIGMA = 0.7


def test_dps_is_biased_on_mode_masses(case2d, H):
    prob = gp.LinearGaussianGMMProblem(case2d.prior, case2d.A, case2d.y, SIGMA)
    A, y = case2d.A, case2d.y

    def one(key):
        return sample_dps(
            key,
            case2d.score_fn,
            case2d.sde,
            prob.log_likelihood,
            2,
            H.N,
            100,
            scale=0.5,
            residual_fn=lambda x0: y - A @ x0,
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), H.SEEDS))
    x = np.asarray(res.particles)
    assert np.all(np.isfinite(x))
    assert np.all(np.asarray(res.log_weights) == np.asarray(res.log_weights)[..., :1])
    s = H.summarise(prob.posterior, x)
    # the heavier plausible mode holds 0.60 of the exact mass; DPS misses it by > 4 SE
    assert np.max(np.abs(s.z)) > H.Z_MAX, (s.frac, s.ref, s.z)
