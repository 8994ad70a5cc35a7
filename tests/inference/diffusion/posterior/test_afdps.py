"""AFDPS (SDE variant) against the exact GMM posterior and evidence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.posterior.afdps import sample_afdps
from models import gmm_posterior as gp

SIGMA = 1.0


@pytest.fixture(scope="module")
def afdps_run(case2d, H):
    prob = gp.LinearGaussianGMMProblem(case2d.prior, case2d.A, case2d.y, SIGMA)
    lap = -float(jnp.sum(case2d.A**2)) / SIGMA**2

    def one(key):
        return sample_afdps(
            key,
            case2d.score_fn,
            case2d.sde,
            prob.log_likelihood,
            2,
            H.N,
            400,
            laplacian_fn=lambda x: lap,
            gaussian=(case2d.A, case2d.y, SIGMA),
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(4), H.SEEDS))
    return prob, res


def test_afdps_matches_exact_posterior(afdps_run, H):
    prob, res = afdps_run
    s = H.summarise(prob.posterior, res.particles["x"])
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac, s.ref, s.z)
    assert s.sw < H.SW_FACTOR * s.floor, (s.sw, s.floor)


@pytest.mark.xfail(
    reason="AFDPS's evidence has an O(du) bias of the left-point Euler-Maruyama weights "
    "(+1.6 / +0.3 / ~0 nats at 100 / 400 / 1600 steps for large N) and a heavy right tail "
    "(SD 0.56 nats at N = 2000) whose Jensen bias is negative: 8-seed means swing by +-0.5 nats. "
    "See the 'Evidence estimate' paragraph of inference/diffusion/posterior/afdps.py. The "
    "particle law passes (test above).",
    strict=False,
)
def test_afdps_log_evidence(afdps_run, H):
    prob, res = afdps_run
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    assert abs(err) < H.EVIDENCE_TOL and abs(z) < H.Z_MAX, (err, z)
