"""TDS with a non-linear likelihood ``y ~ N(|x_1|, s)`` on the 2-d GMM prior, checked against
a grid posterior (moments, branch masses) and the grid evidence."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.posterior.tds import sample_tds


def test_tds_nonlinear_matches_grid(case2d, H):
    y, s = 2.5, 1.0

    def log_lik(x):
        return -0.5 * ((y - jnp.abs(x[0])) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

    def one(key):
        return sample_tds(key, case2d.score_fn, case2d.sde, log_lik, 2, H.N, 100)

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), H.SEEDS))
    pts, w, log_z = H.grid_posterior(case2d.prior, log_lik)

    def feats(z):  # P(x1 > 0), P(x2 > 0), E x1, E x2, E |x1|
        return np.stack([z[..., 0] > 0, z[..., 1] > 0, z[..., 0], z[..., 1], np.abs(z[..., 0])], -1)

    mean, exact, z = H.grid_feature_z(feats, pts, w, res.particles["x"])
    assert np.all(np.abs(z) < H.Z_MAX), (mean, exact, z)
    err, zz = H.evidence_z(res.log_evidence, log_z)
    assert abs(err) < H.EVIDENCE_TOL and abs(zz) < H.Z_MAX, (err, zz)
