"""Resampling schemes: unbiased offspring counts and variance ordering."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.smc.resampling import RESAMPLERS, get_resampler

SCHEMES = sorted(RESAMPLERS)
N = 12
REPS = 4000


def _weights(seed=0, n=N):
    w = np.random.default_rng(seed).dirichlet(np.full(n, 0.7))
    w[3] = 0.0  # a zero-weight particle must never be picked
    return jnp.asarray(w / w.sum(), jnp.float32)


@functools.cache
def _batched(name, m):
    fn = get_resampler(name)
    return jax.jit(jax.vmap(lambda k, w: fn(k, w, m), in_axes=(0, None)))


def _counts(name, w, m, reps=REPS, seed=1):
    keys = jax.random.split(jax.random.key(seed), reps)
    anc = _batched(name, m)(keys, w)
    assert anc.shape == (reps, m) and anc.dtype == jnp.int32
    anc = np.asarray(anc)
    assert anc.min() >= 0 and anc.max() < w.shape[0]
    return _bincount(anc, w.shape[0])


def _bincount(anc, n):
    rows = np.repeat(np.arange(anc.shape[0]), anc.shape[1])
    out = np.zeros((anc.shape[0], n), np.int64)
    np.add.at(out, (rows, anc.ravel()), 1)
    return out


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("m", [N, 7 * N + 3])
def test_offspring_counts_unbiased(name, m):
    """E[O_i] = M w_i, checked by a z-test per particle over independent replicates."""
    w = _weights()
    counts = _counts(name, w, m)
    expected = m * np.asarray(w, np.float64)
    mean = counts.mean(0)
    se = counts.std(0, ddof=1) / np.sqrt(REPS)
    # Where the count is deterministic (se = 0) it must equal its expectation to within 1.
    det = se == 0
    assert np.all(np.abs(mean[det] - expected[det]) < 1.0), (mean, expected)
    z = (mean[~det] - expected[~det]) / se[~det]
    assert np.all(np.abs(z) < 4.5), z
    assert np.all(counts[:, 3] == 0)
    assert np.all(counts.sum(1) == m)


def test_biased_scheme_would_fail_the_z_test():
    """Sanity check of the test itself: dropping the random shift of systematic resampling
    (u_m = m / M) is biased and is caught by the same statistic."""
    w = _weights()

    def biased(key, weights, m):
        cdf = jnp.cumsum(weights)
        return jnp.searchsorted(cdf, jnp.arange(m) / m, side="right").astype(jnp.int32)

    anc = np.asarray(jax.vmap(lambda k: biased(k, w, N))(jax.random.split(jax.random.key(0), 50)))
    counts = _bincount(anc, N)
    expected = N * np.asarray(w)
    assert np.max(np.abs(counts.mean(0) - expected)) > 0.1


def test_variance_ordering():
    """Systematic, stratified and residual have smaller offspring variance than multinomial
    (Chopin & Papaspiliopoulos 2020, Sec. 9.6)."""
    w = _weights(seed=3)
    var = {name: _counts(name, w, N).var(0).sum() for name in SCHEMES}
    # multinomial: sum_i M w_i (1 - w_i) exactly
    exact_multi = N * float(np.sum(np.asarray(w) * (1 - np.asarray(w))))
    assert abs(var["multinomial"] - exact_multi) < 0.1 * exact_multi
    for name in ("systematic", "stratified", "residual"):
        assert var[name] < 0.8 * var["multinomial"], var


def test_degenerate_and_uniform_weights():
    w = jnp.zeros(N).at[5].set(1.0)
    for name in SCHEMES:
        anc = _batched(name, N)(jax.random.split(jax.random.key(0), REPS), w)
        assert np.all(np.asarray(anc) == 5), name
    u = jnp.full(N, 1 / N)
    for name in ("systematic", "stratified", "residual"):
        anc = _batched(name, N)(jax.random.split(jax.random.key(0), REPS), u)
        assert np.all(np.sort(np.asarray(anc), axis=1) == np.arange(N)), name


def test_unnormalised_float32_rounding_is_safe():
    # weights that sum to less than 1 must not produce the out-of-range index N
    w = jnp.full(N, 0.98 / N, jnp.float32)
    for name in SCHEMES:
        anc = _batched(name, N)(jax.random.split(jax.random.key(2), REPS), w)
        assert int(anc.max()) < N


def test_get_resampler_errors():
    with pytest.raises(ValueError, match="unknown resampling scheme 'bogus'"):
        get_resampler("bogus")
    assert get_resampler("systematic") is RESAMPLERS["systematic"]
    fn = RESAMPLERS["multinomial"]
    assert get_resampler(fn) is fn
