"""TDS (variance-inflated Gaussian twist) against the exact linear-Gaussian GMM posterior."""

import jax
import numpy as np

from inference.diffusion.posterior.tds import gaussian_twist, sample_tds
from models import gmm_posterior as gp

SIGMA = 0.7


def test_tds_linear_gaussian_matches_exact(case2d, H):
    prob = gp.LinearGaussianGMMProblem(case2d.prior, case2d.A, case2d.y, SIGMA)
    twist = gaussian_twist(case2d.sde, case2d.A, case2d.y, SIGMA)

    def one(key):
        return sample_tds(
            key, case2d.score_fn, case2d.sde, prob.log_likelihood, 2, H.N, 100, log_twist_fn=twist
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), H.SEEDS))
    s = H.summarise(prob.posterior, res.particles["x"])
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac, s.ref, s.z)
    assert s.sw < H.SW_FACTOR * s.floor, (s.sw, s.floor)
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    assert abs(err) < H.EVIDENCE_TOL and abs(z) < H.Z_MAX, (err, z)
    wrong = float(gp.log_evidence(case2d.prior, case2d.A, case2d.y, SIGMA * 2**0.5))
    assert abs(H.evidence_z(res.log_evidence, wrong)[1]) > H.Z_MAX
