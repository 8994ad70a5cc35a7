"""Two-sample discrepancies for testing samplers against exact draws.

* Energy distance (Szekely & Rizzo 2013, "Energy statistics", J. Stat. Plan. Inference 143,
  eq. 2): ``D^2(P, Q) = 2 E|X - Y| - E|X - X'| - E|Y - Y'| >= 0``, zero iff ``P = Q``. The
  estimator here uses U-statistics for the within-sample terms (unbiased for ``D^2``), so under
  ``P = Q`` it fluctuates around 0 with spread ``O(1/n)``.
* Sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015): the mean over random unit
  directions ``u`` of the 1-d squared W2 between ``u^T X`` and ``u^T Y`` (sorted samples,
  equal sizes), square-rooted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from inference import rng

__all__ = ["energy_distance", "energy_distance_null", "sliced_wasserstein"]


def _sum_pairwise_dist(x: Array, y: Array, same: bool) -> Array:
    """``sum_{i,j} |x_i - y_j|`` from the Gram matrix, in row blocks of at most 2048 rows.

    With ``same=True`` (``y is x``) the diagonal is masked to exactly zero (the Gram identity
    leaves rounding noise there)."""
    n = x.shape[0]
    block = min(n, 2048)
    pad = (-n) % block
    xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)])
    rows = jnp.arange(n + pad).reshape(-1, block)
    y2 = jnp.sum(y**2, axis=-1)

    def one(idx):
        xi = xp[idx]
        d2 = jnp.sum(xi**2, axis=-1)[:, None] + y2[None, :] - 2.0 * xi @ y.T
        d = jnp.sqrt(jnp.maximum(d2, 0.0))
        keep = (idx < n)[:, None]
        if same:
            keep = keep & (idx[:, None] != jnp.arange(y.shape[0])[None, :])
        return jnp.sum(jnp.where(keep, d, 0.0))

    return jnp.sum(jax.lax.map(one, rows))


@jax.jit
def energy_distance(x: Array, y: Array) -> Array:
    """Unbiased (U-statistic) estimate of the squared energy distance ``D^2`` between the
    distributions of the rows of ``x`` (n, d) and ``y`` (m, d)."""
    x = jnp.asarray(x)
    y = jnp.asarray(y, dtype=x.dtype)
    n, m = x.shape[0], y.shape[0]
    c = 0.5 * (jnp.mean(x, axis=0) + jnp.mean(y, axis=0))  # centre to limit cancellation
    x, y = x - c, y - c
    exy = _sum_pairwise_dist(x, y, False) / (n * m)
    exx = _sum_pairwise_dist(x, x, True) / (n * (n - 1))
    eyy = _sum_pairwise_dist(y, y, True) / (m * (m - 1))
    return 2.0 * exy - exx - eyy


def energy_distance_null(sample_fn, n: int, num_replicates: int, key: Array) -> Array:
    """Null distribution of :func:`energy_distance` at sample size ``n``: the statistic between
    pairs of independent exact samples ``sample_fn(key, n) -> (n, d)``. Returns
    ``(num_replicates,)`` values; a sampler is consistent with the target at this sample size
    when its statistic falls within (a small multiple of) the upper quantiles of these."""
    keys = jax.random.split(key, 2 * num_replicates)
    vals = [
        energy_distance(sample_fn(keys[2 * i], n), sample_fn(keys[2 * i + 1], n))
        for i in range(num_replicates)
    ]
    return jnp.stack(vals)


def sliced_wasserstein(key: Array, x: Array, y: Array, num_projections: int = 128) -> Array:
    """Monte Carlo sliced Wasserstein-2 distance between equal-size samples ``x``, ``y``."""
    x = jnp.asarray(x)
    y = jnp.asarray(y, dtype=x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}")
    u = rng.normal(key, (num_projections, x.shape[1]), x.dtype)
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    px = jnp.sort(x @ u.T, axis=0)
    py = jnp.sort(y @ u.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))
