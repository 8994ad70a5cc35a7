"""The SMC engine: exact log-evidence identities, unbiasedness, underflow and failure flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from inference.smc import engine
from inference.smc.engine import FeynmanKac, check, log_ess, run

# Static Gaussian model cut into T likelihood increments:
#   x ~ N(0, S0^2),  y_t | x ~ N(x, SIG^2),  t = 0..T-1,
# Feynman-Kac: M_0 = prior, M_t = identity (or an exact Gibbs move), G_t = N(y_t; x, SIG^2);
# Z_T = p(y_{0:T-1}) = N(y; 0, S0^2 11' + SIG^2 I).
S0, SIG, T = 1.5, 1.0, 10
YS = np.random.default_rng(0).normal(0.7, SIG, size=T).astype(np.float32)


def exact_log_evidence(ys=YS):
    n = len(ys)
    cov = S0**2 * np.ones((n, n)) + SIG**2 * np.eye(n)
    return stats.multivariate_normal(np.zeros(n), cov).logpdf(ys.astype(np.float64))


def static_fk(ys=YS, dict_particles=False):
    ys = jnp.asarray(ys)

    def init(key, n):
        x = S0 * jax.random.normal(key, (n,))
        return ({"x": x} if dict_particles else x), jnp.zeros(n)

    def step(key, particles, t):
        x = particles["x"] if dict_particles else particles
        log_g = -0.5 * ((ys[t] - x) / SIG) ** 2 - jnp.log(SIG) - 0.5 * jnp.log(2 * jnp.pi)
        return particles, log_g, {"t": t, "max_g": jnp.max(log_g)}

    return FeynmanKac(init, step)


def gibbs_rejuvenate(ys=YS):
    """Exact draw from p(x | y_{0:t-1}), the law targeted by the resampled particles at t."""
    ys = jnp.asarray(ys)

    def rejuv(key, x, t):
        mask = jnp.arange(ys.shape[0]) < t
        prec = 1 / S0**2 + jnp.sum(mask) / SIG**2
        mean = jnp.sum(jnp.where(mask, ys, 0.0)) / SIG**2 / prec
        return mean + jax.random.normal(key, x.shape) / jnp.sqrt(prec)

    return rejuv


def test_log_ess():
    assert np.isclose(float(log_ess(jnp.zeros(50))), np.log(50), atol=1e-5)
    assert np.isclose(float(log_ess(jnp.array([0.0, -jnp.inf, -jnp.inf]))), 0.0, atol=1e-6)
    w = np.array([0.5, 0.3, 0.2])
    assert np.isclose(float(engine.ess(jnp.log(jnp.asarray(w)) + 7.0)), 1 / np.sum(w**2))
    # NaN counts as weight zero
    assert np.isclose(float(engine.ess(jnp.array([0.0, jnp.nan, 0.0]))), 2.0, atol=1e-5)


@pytest.mark.parametrize(
    "log_w",
    [
        np.array([0.3, -1.2, 40.0, 39.5, -np.inf]),
        np.array([-800.0, -801.0, np.nan, -799.5]),  # would underflow without the shift
        np.zeros(6),
    ],
)
def test_one_pass_normalisation_and_ess(log_w):
    """The engine's one-pass normalisation against float64 two-pass definitions: log-sum-exp,
    normalised log-weights and Kong's ESS ``1 / sum W^2`` (NaN counts as weight zero)."""
    w64 = np.where(np.isnan(log_w), -np.inf, log_w).astype(np.float64)
    ref_lse = np.logaddexp.reduce(w64)
    ref_W = np.exp(w64 - ref_lse)
    log_W, lse, ok, ess_value = engine.normalize_with_ess(jnp.asarray(log_w, jnp.float32))
    assert bool(ok)
    np.testing.assert_allclose(float(lse), ref_lse, rtol=1e-6)
    # float32: log W = log w - lse loses |log w| * eps ~ 800 * 1.2e-7 ~ 1e-4 (relative in W)
    np.testing.assert_allclose(np.exp(np.asarray(log_W, np.float64)), ref_W, rtol=2e-4)
    np.testing.assert_allclose(float(ess_value), 1.0 / np.sum(ref_W**2), rtol=1e-5)
    assert engine.normalize_log_weights(jnp.asarray(log_w, jnp.float32))[1] == lse


def test_one_pass_normalisation_all_zero_weights():
    log_W, lse, ok, ess_value = engine.normalize_with_ess(jnp.full((4,), -jnp.inf))
    assert not bool(ok) and float(lse) == -np.inf
    np.testing.assert_allclose(np.asarray(log_W), -np.log(4.0), rtol=1e-6)
    assert float(ess_value) == 4.0  # that of the uniform fallback weights


_C = jnp.linspace(-3.0, 2.0, 7)


def _const_init(key, n):
    return jax.random.normal(key, (n,)), jnp.log(jnp.arange(1.0, 9.0))  # non-uniform


def _const_step(key, x, t):
    return x + jax.random.normal(key, x.shape), jnp.full(x.shape, _C[t]), ()


# one compilation for all thresholds: the threshold is a traced argument
_const_run = jax.jit(
    lambda k, thr: run(k, FeynmanKac(_const_init, _const_step), 8, 7, ess_threshold=thr)
)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_constant_potentials_give_exact_evidence(threshold):
    """If G_t = c_t does not depend on x, Z^N = mean(w_0) prod c_t for every run, whatever is
    resampled: an exact identity of the estimator (a missing weight reset breaks it)."""
    c = _C
    res = _const_run(jax.random.key(0), threshold)
    expected = np.log(np.mean(np.arange(1.0, 9.0))) + np.cumsum(np.asarray(c))
    np.testing.assert_allclose(res.log_evidence_running, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.log_evidence, expected[-1], rtol=1e-5)
    if threshold == 1.0:
        assert bool(np.all(res.resampled))
    if threshold == 0.0:
        assert not bool(np.any(res.resampled))
        np.testing.assert_array_equal(res.ancestors, np.tile(np.arange(8), (7, 1)))


def test_no_resampling_is_plain_importance_sampling():
    """With ess_threshold=0, Z^N = (1/N) sum_n w_0^n prod_t G_t(x_t^n) exactly."""
    n, steps = 6, 5
    x0 = jnp.arange(n, dtype=jnp.float32) / n
    log_w0 = jnp.linspace(-1.0, 1.0, n)

    def init(key, n_):
        return x0, log_w0

    def step(key, x, t):
        x = 0.9 * x + 0.1 * t
        return x, -(x**2) * (t + 1), ()

    res = run(jax.random.key(0), FeynmanKac(init, step), n, steps, ess_threshold=0.0)
    x = np.asarray(x0, np.float64)
    log_w = np.asarray(log_w0, np.float64)
    for t in range(steps):
        x = 0.9 * x + 0.1 * t
        log_w = log_w - x**2 * (t + 1)
    expected = np.log(np.mean(np.exp(log_w)))
    assert np.isclose(float(res.log_evidence), expected, atol=1e-5)
    w = np.exp(log_w - log_w.max())
    np.testing.assert_allclose(np.exp(res.log_weights), w / w.sum(), atol=1e-6)
    np.testing.assert_allclose(res.ess[-1], w.sum() ** 2 / np.sum(w**2), rtol=1e-5)


def _z_test_unbiased(log_z, exact):
    """Mean of Z^N / Z within 4 standard errors of 1."""
    ratio = np.exp(np.asarray(log_z, np.float64) - exact)
    mean, se = ratio.mean(), ratio.std(ddof=1) / np.sqrt(ratio.size)
    assert abs(mean - 1.0) < 4 * se + 1e-3, (mean, se)
    return mean, se


@pytest.mark.parametrize(
    "threshold,resampling,rejuv",
    [
        (0.5, "systematic", True),
        (1.0, "residual", True),
        pytest.param(1.0, "multinomial", False, marks=pytest.mark.slow),
    ],
)
def test_log_evidence_unbiased_static_model(threshold, resampling, rejuv):
    exact = exact_log_evidence()
    fk = static_fk()
    rej = gibbs_rejuvenate() if rejuv else None
    runs = jax.jit(
        jax.vmap(
            lambda k: (
                run(
                    k, fk, 200, T, resampling=resampling, ess_threshold=threshold, rejuvenate=rej
                ).log_evidence
            )
        )
    )
    log_z = np.asarray(runs(jax.random.split(jax.random.key(1), 400)))
    assert np.all(np.isfinite(log_z))
    mean, se = _z_test_unbiased(log_z, exact)
    # The test has power: a factor of 2 in Z is far outside the interval.
    assert abs(2 * mean - 1.0) > 4 * se and abs(0.5 * mean - 1.0) > 4 * se


def test_rejuvenation_only_after_resampling_and_pytree_particles():
    fk = static_fk(dict_particles=True)
    calls = []

    def rejuv(key, particles, t):
        calls.append(t)
        return {"x": particles["x"] + 0.0}

    res = run(
        jax.random.key(3),
        fk,
        64,
        T,
        ess_threshold=0.9,
        rejuvenate=rejuv,
        summary_fn=lambda p, lw, aux: jnp.sum(jnp.exp(lw) * p["x"]),
        resample_at_end=True,
    )
    np.testing.assert_allclose(res.log_weights, -np.log(64) * np.ones(64), rtol=1e-6)
    assert calls  # traced once inside the scan
    assert res.particles["x"].shape == (64,)
    assert res.aux["t"].shape == (T,)
    np.testing.assert_array_equal(res.aux["t"], np.arange(T))
    assert res.summaries.shape == (T,)
    assert res.ancestors.shape == (T, 64) and res.ancestors.dtype == jnp.int32
    assert res.ess.shape == (T,) and res.resampled.shape == (T,)
    # posterior mean of x from the final weighted particles matches the closed form
    prec = 1 / S0**2 + T / SIG**2
    post_mean = YS.sum() / SIG**2 / prec
    assert abs(float(res.summaries[-1]) - post_mean) < 5 / np.sqrt(prec * 10)
    assert not bool(res.failed) and int(res.failed_step) == T
    check(res)


def test_all_but_one_weight_underflow_stays_finite():
    n = 16
    log_w0 = jnp.full(n, -1e5).at[7].set(0.0)  # exp(-1e5) underflows to 0 in float32

    def init(key, n_):
        return jnp.arange(n, dtype=jnp.float32), log_w0

    def step(key, x, t):
        # a second underflow: all but one particle gets a potential of exp(-1e4)
        return x, jnp.where(x == 7.0, -2.0, -1e4), ()

    res = run(jax.random.key(0), FeynmanKac(init, step), n, 3, ess_threshold=0.0)
    assert np.all(np.isfinite(res.log_evidence_running))
    assert np.allclose(res.log_evidence_running, -np.log(n) - 2.0 * np.arange(1, 4), atol=1e-4)
    assert np.allclose(res.ess, 1.0)
    assert np.isclose(float(jnp.exp(res.log_weights[7])), 1.0)
    assert np.all(np.isfinite(res.log_weights[:7])) or np.all(res.log_weights[:7] == -np.inf)
    check(res)


def _bad_init(key, n):
    return jax.random.normal(key, (n,)), jnp.zeros(n)


def _bad_run(key, bad):
    def step(key, x, t):
        return x, jnp.where(t == 3, bad, -0.5 * x**2), ()

    return run(key, FeynmanKac(_bad_init, step), 32, 6)


_bad_run_batched = jax.jit(jax.vmap(_bad_run, in_axes=(0, None)))


@pytest.mark.parametrize("bad", [-jnp.inf, jnp.nan])
def test_all_weights_zero_is_flagged(bad):
    batched = _bad_run_batched(jax.random.split(jax.random.key(0), 2), bad)
    res = jax.tree.map(lambda a: a[0], batched)
    assert bool(res.failed) and int(res.failed_step) == 3
    assert np.all(np.isneginf(res.log_evidence_running[3:]))
    assert np.all(np.isfinite(res.log_evidence_running[:3]))
    assert not np.any(np.isnan(res.log_weights))
    with pytest.raises(FloatingPointError, match=r"all particle weights are zero at step t=3"):
        check(res)
    # batched results are checked too
    with pytest.raises(FloatingPointError, match="t=3 in run 0 of a batch of 2"):
        check(batched)


def test_some_nan_weights_count_as_zero():
    def init(key, n):
        return jnp.arange(n, dtype=jnp.float32), jnp.zeros(n)

    def step(key, x, t):
        return x, jnp.where(x < 2, jnp.nan, 0.0), ()

    res = run(jax.random.key(0), FeynmanKac(init, step), 4, 1)
    assert not bool(res.failed)
    assert np.isclose(float(res.log_evidence), np.log(0.5), atol=1e-6)
    np.testing.assert_allclose(np.exp(res.log_weights), [0, 0, 0.5, 0.5], atol=1e-6)
    np.testing.assert_array_equal(res.nan_potentials, [2])  # counted, for callers to report


def test_nan_potentials_are_counted_per_step():
    """Three NaN potentials at step 1 only (by position: resampling cannot move them), none
    at the others; the report names the count and the first step."""

    def init(key, n):
        return jnp.zeros(n), jnp.zeros(n)

    def step(key, x, t):
        nan_here = (jnp.arange(x.shape[0]) < 3) & (t == 1)
        return x, jnp.where(nan_here, jnp.nan, 0.0), ()

    res = run(jax.random.key(0), FeynmanKac(init, step), 8, 3, ess_threshold=1.0)
    np.testing.assert_array_equal(res.nan_potentials, [0, 3, 0])
    assert engine.nan_potentials_report(res).startswith(
        "3 particle log-weight(s) were NaN, at 1 of 3 steps (first step 1)"
    )
    clean = run(
        jax.random.key(0), FeynmanKac(init, lambda k, x, t: (x, jnp.zeros_like(x), ())), 8, 3
    )
    assert engine.nan_potentials_report(clean) is None


def test_initial_weights_all_zero_flagged():
    def init(key, n):
        return jnp.zeros(n), jnp.full(n, -jnp.inf)

    def step(key, x, t):
        return x, jnp.zeros_like(x), ()

    res = run(jax.random.key(0), FeynmanKac(init, step), 4, 2)
    assert bool(res.failed) and int(res.failed_step) == -1
    with pytest.raises(FloatingPointError, match="t=-1"):
        check(res)


def test_unknown_resampler():
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        run(jax.random.key(0), static_fk(), 8, 2, resampling="nope")


def test_float64_exact_static_model():
    """In float64 with many particles and the exact Gibbs rejuvenation, log Z^N is close to
    the closed form (its standard deviation is O(1/sqrt(N)))."""
    with jax.enable_x64(True):
        ys = YS.astype(np.float64)
        res = run(
            jax.random.key(5),
            static_fk(ys),
            20000,
            T,
            ess_threshold=0.5,
            rejuvenate=gibbs_rejuvenate(ys),
        )
        assert res.log_evidence.dtype == jnp.float64
        assert abs(float(res.log_evidence) - exact_log_evidence(ys)) < 0.05


def _moving_fk():
    """Random-walk moves with Gaussian potentials, so that particles and weights both change."""

    def init(key, n):
        return jax.random.normal(key, (n,)), jnp.zeros(n)

    def step(key, x, t):
        x = x + 0.5 * jax.random.normal(key, x.shape)
        return x, -0.5 * (x - jnp.asarray(YS)[t]) ** 2, {"t": t}

    return FeynmanKac(init, step)


def _weighted_mean(particles, log_W, aux):
    return jnp.sum(jnp.exp(log_W) * particles)


@pytest.mark.parametrize("every", [3, 5])  # 3 does not divide T = 10: a padded last block
def test_resample_every_records_every_step_as_the_one_step_loop(every):
    """Without resampling, deciding every k steps changes nothing: the block loop's batched
    normalisation gives the particles, weights, ESS, evidence and summaries of the per-step
    loop at every step."""
    fk, key = _moving_fk(), jax.random.key(5)
    kwargs = dict(ess_threshold=0.0, summary_fn=_weighted_mean)
    one = run(key, fk, 64, T, **kwargs)
    block = run(key, fk, 64, T, resample_every=every, **kwargs)
    np.testing.assert_array_equal(block.particles, one.particles)
    for field in ("log_weights", "ess", "log_evidence_increments", "log_evidence_running"):
        np.testing.assert_allclose(getattr(block, field), getattr(one, field), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(block.summaries, one.summaries, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(block.aux["t"], np.arange(T))
    assert block.ess.shape == (T,) and block.ancestors.shape == (T, 64)
    np.testing.assert_array_equal(block.ancestors, one.ancestors)


@pytest.mark.parametrize("unroll", [True, 2])
def test_unrolled_blocks_give_the_numbers_of_the_block_loop(unroll):
    """``unroll`` compiles the moves of a block as straight-line code (``True``) or two per
    loop iteration; with resampling on, the particles, ancestors, weights and evidence are
    those of the rolled loop."""
    fk, key = _moving_fk(), jax.random.key(6)
    rolled = run(key, fk, 64, T, ess_threshold=0.9, resample_every=5)
    unrolled = run(key, fk, 64, T, ess_threshold=0.9, resample_every=5, unroll=unroll)
    assert rolled.resampled.any()
    np.testing.assert_array_equal(unrolled.ancestors, rolled.ancestors)
    np.testing.assert_allclose(unrolled.particles, rolled.particles, rtol=1e-6, atol=1e-6)
    for field in ("log_weights", "ess", "log_evidence_running"):
        np.testing.assert_allclose(
            getattr(unrolled, field), getattr(rolled, field), rtol=2e-5, atol=2e-5
        )


def test_without_the_ancestor_record_the_run_is_the_same():
    """``record_ancestors=False`` drops the ``(T, N)`` genealogy and nothing else."""
    fk, key = _moving_fk(), jax.random.key(7)
    full = run(key, fk, 64, T, ess_threshold=0.9, resample_every=2)
    lean = run(key, fk, 64, T, ess_threshold=0.9, resample_every=2, record_ancestors=False)
    assert lean.ancestors is None and full.ancestors.shape == (T, 64)
    np.testing.assert_array_equal(lean.particles, full.particles)
    np.testing.assert_array_equal(lean.log_evidence_running, full.log_evidence_running)
    np.testing.assert_array_equal(lean.resampled, full.resampled)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None])
def test_unroll_must_be_a_flag_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="unroll must be True, False or a positive integer"):
        run(jax.random.key(0), static_fk(), 8, 4, unroll=bad)


def test_resample_every_decides_only_at_block_starts():
    """With ``ess_threshold=1`` and ``k = 3``: resampled exactly at t = 0, 3, 6, 9, identity
    ancestors elsewhere; the constant-potential identity Z^N = mean(w_0) prod c_t still holds."""
    fk = FeynmanKac(_const_init, _const_step)
    res = run(jax.random.key(0), fk, 8, 7, ess_threshold=1.0, resample_every=3)
    np.testing.assert_array_equal(res.resampled, np.arange(7) % 3 == 0)
    np.testing.assert_array_equal(
        res.ancestors[np.arange(7) % 3 != 0], np.tile(np.arange(8), (4, 1))
    )
    expected = np.log(np.mean(np.arange(1.0, 9.0))) + np.cumsum(np.asarray(_C))
    np.testing.assert_allclose(res.log_evidence_running, expected, rtol=1e-5, atol=1e-5)


def test_resample_every_log_evidence_unbiased():
    exact = exact_log_evidence()
    runs = jax.jit(
        jax.vmap(
            lambda k: (
                run(
                    k, static_fk(), 200, T, rejuvenate=gibbs_rejuvenate(), resample_every=3
                ).log_evidence
            )
        )
    )
    log_z = np.asarray(runs(jax.random.split(jax.random.key(2), 400)))
    mean, se = _z_test_unbiased(log_z, exact)
    assert abs(2 * mean - 1.0) > 4 * se and abs(0.5 * mean - 1.0) > 4 * se


def test_resample_every_all_weights_zero_inside_a_block_is_flagged():
    def step(key, x, t):
        return x, jnp.where(t == 3, -jnp.inf, -0.5 * x**2), ()

    res = run(jax.random.key(0), FeynmanKac(_bad_init, step), 32, 6, resample_every=4)
    assert bool(res.failed) and int(res.failed_step) == 3
    assert np.all(np.isneginf(res.log_evidence_running[3:]))
    assert np.all(np.isfinite(res.log_evidence_running[:3]))
    assert not np.any(np.isnan(res.log_weights))
    with pytest.raises(FloatingPointError, match="t=3"):
        check(res)


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_resample_every_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="resample_every must be a positive integer"):
        run(jax.random.key(0), static_fk(), 8, 4, resample_every=bad)
