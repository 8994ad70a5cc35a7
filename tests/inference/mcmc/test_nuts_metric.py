"""NUTS: the diagonal and dense metric branches agree; max_tree_depth is respected."""

import jax
import jax.numpy as jnp
import numpy as np

from inference.mcmc import nuts
from inference.mcmc.base import init

MEAN = jnp.array([1.0, -2.0, 0.5])
SCALES = jnp.array([0.5, 2.0, 1.0])
CORR = jnp.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
COV = CORR * SCALES[:, None] * SCALES[None, :]
PREC = jnp.linalg.inv(COV)


def gaussian_logdensity(x):
    r = x - MEAN
    return -0.5 * r @ PREC @ r


def test_nuts_respects_max_tree_depth_and_metric_branches_agree():
    """A dense inverse mass matrix diag(v) gives exactly the transition of the vector v; a tiny
    step size hits ``max_tree_depth`` (2^4 - 1 = 15 leapfrog steps)."""
    v = jnp.array([0.3, 2.0, 1.0])
    state = init(jnp.array([0.2, -1.0, 0.4]), gaussian_logdensity)

    @jax.jit
    def both(key, step_size):
        a = nuts.step(key, state, gaussian_logdensity, step_size, v, max_tree_depth=4)
        b = nuts.step(key, state, gaussian_logdensity, step_size, jnp.diag(v), max_tree_depth=4)
        return a, b

    for seed in range(3):
        (sa, ia), (sb, ib) = both(jax.random.key(seed), 0.3)
        np.testing.assert_allclose(sa.position, sb.position, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ia.acceptance_rate, ib.acceptance_rate, rtol=1e-4)
        assert int(ia.n_steps) == int(ib.n_steps) and int(ia.tree_depth) == int(ib.tree_depth)
    (_, ia), _ = both(jax.random.key(0), 1e-3)
    assert int(ia.tree_depth) == 4 and int(ia.n_steps) == 15
