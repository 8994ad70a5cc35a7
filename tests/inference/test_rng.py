"""inference.rng draws flat and reshapes: the numbers must be jax.random's, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference import rng


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_same_numbers_as_jax_random(shape):
    key = jax.random.PRNGKey(11)
    np.testing.assert_array_equal(rng.normal(key, shape), jax.random.normal(key, shape))
    np.testing.assert_array_equal(
        rng.uniform(key, shape, jnp.float32, -2.0, 2.0),
        jax.random.uniform(key, shape, jnp.float32, -2.0, 2.0),
    )


def test_same_numbers_under_vmap_and_jit():
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    ours = jax.jit(jax.vmap(lambda k: rng.normal(k, (5, 2))))(keys)
    theirs = jax.jit(jax.vmap(lambda k: jax.random.normal(k, (5, 2))))(keys)
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape == (4, 5, 2) and ours.dtype == jnp.result_type(float)
