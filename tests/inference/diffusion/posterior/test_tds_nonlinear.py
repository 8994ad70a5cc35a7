"""TDS with a non-linear likelihood ``y ~ N(|x_1|, s)`` on the 2-d GMM prior, checked against
a grid posterior (moments, branch masses) and the grid evidence."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.posterior.tds import sample_tds


def _grid_posterior(prior, y, s, lim=8.0, n=801):
    g = np.linspace(-lim, lim, n)
    X1, X2 = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X1.ravel(), X2.ravel()], -1)
    logp = np.asarray(prior.logpdf(jnp.asarray(pts)), np.float64)
    loglik = -0.5 * ((y - np.abs(pts[:, 0])) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    lw = logp + loglik
    m = lw.max()
    w = np.exp(lw - m)
    cell = (g[1] - g[0]) ** 2
    log_z = m + math.log(w.sum() * cell)
    w /= w.sum()
    return pts, w, log_z


def test_tds_nonlinear_matches_grid(case2d, H):
    y, s = 2.5, 1.0

    def log_lik(x):
        return -0.5 * ((y - jnp.abs(x[0])) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

    def one(key):
        return sample_tds(key, case2d.score_fn, case2d.sde, log_lik, 2, H.N, 100)

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), H.SEEDS))
    x = np.asarray(res.particles["x"], np.float64)
    pts, w, log_z = _grid_posterior(case2d.prior, y, s)
    # statistics: P(x1 > 0), P(x2 > 0), E x1, E x2, E |x1|
    feats = lambda z: np.stack(  # noqa: E731
        [z[..., 0] > 0, z[..., 1] > 0, z[..., 0], z[..., 1], np.abs(z[..., 0])], -1
    )
    exact = (w[:, None] * feats(pts)).sum(0)
    per_seed = feats(x).mean(1)
    se = per_seed.std(0, ddof=1) / np.sqrt(H.SEEDS)
    z = (per_seed.mean(0) - exact) / se
    assert np.all(np.abs(z) < H.Z_MAX), (per_seed.mean(0), exact, z)
    err, zz = H.evidence_z(res.log_evidence, log_z)
    assert abs(err) < H.EVIDENCE_TOL and abs(zz) < H.Z_MAX, (err, zz)
