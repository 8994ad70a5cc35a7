"""Energy distance against its closed form for two 1-d Gaussians; sliced Wasserstein against
the exact W2 of a shift."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from inference.diffusion.metrics import energy_distance, energy_distance_null, sliced_wasserstein


def exact_ed_shift(delta):
    # X ~ N(0,1), Y ~ N(delta,1): E|X-Y| with X-Y ~ N(-delta, 2); E|X-X'| = 2/sqrt(pi)
    s = math.sqrt(2.0)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / 4) + delta * math.erf(
        delta / (s * math.sqrt(2))
    )
    return 2 * e_xy - 2 * 2 / math.sqrt(math.pi)


def test_energy_distance_closed_form_and_null():
    n = 3000
    sample = lambda k, m: jax.random.normal(k, (m, 1))  # noqa: E731
    null = np.asarray(energy_distance_null(sample, n, 20, jax.random.PRNGKey(0)))
    # U-statistic: mean zero under the null; spread O(1/n)
    assert abs(null.mean()) < 3 * null.std() / np.sqrt(20) + 1e-6
    x = sample(jax.random.PRNGKey(1), n)
    y = sample(jax.random.PRNGKey(2), n) + 0.5
    est = float(energy_distance(x, y))
    exact = exact_ed_shift(0.5)  # ~0.137
    # the statistic's sd under a shift is O(1/sqrt(n)); 0.137 * 10% is ~5 sd of the null
    assert abs(est - exact) < 0.1 * exact, (est, exact)


def test_sliced_wasserstein_shift():
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(key, (4000, 3))
    shift = jnp.array([0.3, 0.0, 0.0])
    sw = float(sliced_wasserstein(jax.random.PRNGKey(4), x, x + shift, 256))
    # W2 of a pure shift along direction u is |u.shift|; E[(u.e1)^2] = 1/3 in 3-d
    np.testing.assert_allclose(sw, 0.3 / math.sqrt(3), rtol=0.1)
