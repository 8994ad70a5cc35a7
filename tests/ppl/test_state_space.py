"""ppl.state_space: particle_filter / smoothing / PMMH through numpyro-distribution models."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import ppl
from models.state_space import LinearGaussian, StochasticVolatility
from ppl.arviz_io import group_names
from ppl.state_space import FilterResult, StateSpaceModel, particle_filter, pmmh

A = np.array([[0.9, 0.2], [-0.1, 0.8]])
C = np.array([[1.0, 0.5]])
Q = np.array([[0.3, 0.1], [0.1, 0.2]])
R = np.array([[0.4]])
LG = LinearGaussian(A, C, Q, R, np.zeros(2), np.eye(2))
_, YS = LG.simulate(jax.random.key(0), 50)
YS = np.asarray(YS)
KF = LG.kalman_filter(YS)
EXACT = float(KF.log_likelihood)
FSD = np.sqrt(np.diagonal(np.asarray(KF.covs), axis1=1, axis2=2))


# the auxiliary filter is validated statistically in tests/inference/smc/test_filters.py;
# here its ppl adapter costs one more compilation, so it runs in the slow suite
@pytest.mark.parametrize(
    "method", ["bootstrap", "guided", pytest.param("auxiliary", marks=pytest.mark.slow)]
)
def test_particle_filter_linear_gaussian(method):
    kw = {}
    if method == "guided":
        kw["proposal"], kw["proposal0"] = LG.optimal_proposal()
    lls = []
    for seed in range(8):  # same compiled program, different seeds
        res = particle_filter(LG, YS, particles=400, method=method, seed=seed, **kw)
        lls.append(res.log_likelihood)
    assert isinstance(res, FilterResult)
    assert isinstance(res.log_likelihood, float)
    assert res.filter_means.shape == (50, 2) and res.ess.shape == (50,)
    lls = np.array(lls)
    # log-scale CLT: mean of log estimates ~ exact - var/2, within MC error
    se = lls.std(ddof=1) / np.sqrt(lls.size)
    assert abs(lls.mean() - (EXACT - lls.var() / 2)) < 4 * se + 0.1 * lls.var() + 0.02, lls
    assert np.mean(np.abs(res.filter_means - np.asarray(KF.means)) / FSD) < 0.15
    # same seed, same numbers
    again = particle_filter(LG, YS, particles=400, method=method, seed=7, **kw)
    assert again.log_likelihood == res.log_likelihood


def test_log_likelihood_estimates_shape_seed_and_validation():
    runs = ppl.log_likelihood_estimates(LG, YS, particles=400, runs=16, seed=0)
    assert runs.shape == (16,) and runs.dtype == np.float64 and np.all(np.isfinite(runs))
    again = ppl.log_likelihood_estimates(LG, YS, particles=400, runs=16, seed=0)
    assert np.array_equal(again, runs)
    other = ppl.log_likelihood_estimates(LG, YS, particles=400, runs=16, seed=1)
    assert not np.array_equal(other, runs)
    with pytest.raises(ValueError, match="runs"):
        ppl.log_likelihood_estimates(LG, YS, runs=0)


@pytest.mark.slow  # the engine's unbiasedness is in the default suite (tests/inference/smc)
def test_log_likelihood_estimates_are_unbiased_and_their_spread_falls_with_particles():
    """exp(log p^N(y)) is unbiased for p(y) (Del Moral 2004): over 200 independent filters
    the mean of exp(estimate - exact) is 1 within 4 of its standard errors; the sd of the
    estimates falls with N (by about sqrt(4) = 2 from N = 100 to 400)."""
    wide = ppl.log_likelihood_estimates(LG, YS, particles=100, runs=200, seed=0)
    narrow = ppl.log_likelihood_estimates(LG, YS, particles=400, runs=200, seed=0)
    ratio = np.exp(narrow - EXACT)
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std(ddof=1) / np.sqrt(ratio.size), ratio.mean()
    sd_wide, sd_narrow = wide.std(ddof=1), narrow.std(ddof=1)
    se_difference = np.hypot(sd_wide, sd_narrow) / np.sqrt(2 * 199)
    assert sd_wide - sd_narrow > 4 * se_difference, (sd_wide, sd_narrow)


def test_smooth_against_rts():
    """One filter run (N=400, same compiled program as above) and M=200 FFBS trajectories.
    The error of the smoothed mean is O(sd * sqrt(1/M + 1/N_eff)) with a backward effective
    size N_eff of a few tens, i.e. ~0.2 sd (the rigorous z-test over independent runs is in
    tests/inference/smc/test_smoothing.py); the filter means, which ignore future data, are
    several times further away."""
    res = particle_filter(LG, YS, particles=400, seed=1)
    traj = res.smooth(num_trajectories=200, seed=0)
    assert traj.shape == (200, 50, 2)
    sm, sP = LG.kalman_smoother(YS)
    ssd = np.sqrt(np.diagonal(np.asarray(sP), axis1=1, axis2=2))
    err = np.mean(np.abs(traj.mean(0) - np.asarray(sm)) / ssd)
    assert err < 0.3, err
    assert np.mean(np.abs(np.asarray(KF.means) - np.asarray(sm)) / ssd) > 2 * err
    with pytest.raises(ValueError, match="num_trajectories"):
        res.smooth(0)


@pytest.mark.arviz
def test_filter_summary_and_arviz_export_against_kalman():
    """The summary's weighted moments and quantiles against the Kalman filter's Gaussian
    marginals (errors in filtering sd units, O(1/sqrt(ESS)) ~ 0.1 at N = 400), and the
    exported smoothing draws against the RTS smoother."""
    res = particle_filter(LG, YS, particles=400, seed=1)
    table = res.summary()
    assert table.shape == (50, 4 * 2 + 2) and table.index.name == "t"
    np.testing.assert_allclose(table[["mean[0]", "mean[1]"]], res.filter_means, rtol=1e-5)
    np.testing.assert_allclose(table["log_likelihood"], res.log_likelihood_running)
    kf_mean = np.asarray(KF.means)
    assert np.mean(np.abs(table[["sd[0]", "sd[1]"]].to_numpy() / FSD - 1)) < 0.1
    for q, z in (("q5", -1.645), ("q95", 1.645)):
        quantiles = table[[f"{q}[0]", f"{q}[1]"]].to_numpy()
        assert np.mean(np.abs(quantiles - (kf_mean + z * FSD)) / FSD) < 0.25, q

    data = res.to_arviz(num_trajectories=200, seed=0)
    assert {"posterior", "filtering"} <= group_names(data)
    assert dict(data.posterior["x"].sizes) == {"chain": 1, "draw": 200, "time": 50, "x_dim": 2}
    assert data.filtering["mean"].dims == ("time", "x_dim")
    assert data.filtering["ess"].dims == ("time",)
    sm, sP = LG.kalman_smoother(YS)
    ssd = np.sqrt(np.diagonal(np.asarray(sP), axis1=1, axis2=2))
    smoothed = data.posterior["x"].mean(("chain", "draw")).to_numpy()
    np.testing.assert_allclose(smoothed, res.smooth(200, seed=0).mean(0), rtol=1e-6)
    assert np.mean(np.abs(smoothed - np.asarray(sm)) / ssd) < 0.3


def test_scalar_state_model_and_custom_ssm():
    """A user-written scalar AR(1) model (dist.Normal, no event dims) and stochastic vol."""
    phi, q, r = 0.7, 0.5, 0.3

    ssm = StateSpaceModel(
        init=lambda: dist.Normal(0.0, 1.0),
        transition=lambda x, t: dist.Normal(phi * x, q),
        observation=lambda x, t: dist.Normal(x, r),
    )
    lg = LinearGaussian([[phi]], [[1.0]], [[q**2]], [[r**2]], [0.0], [[1.0]])
    _, ys = lg.simulate(jax.random.key(3), 40)
    res = particle_filter(ssm, np.asarray(ys)[:, 0], particles=500)
    assert res.filter_means.shape == (40, 1)
    exact = float(lg.kalman_filter(ys).log_likelihood)
    assert abs(res.log_likelihood - exact) < 1.0


@pytest.mark.slow
def test_stochastic_volatility_filters_agree():
    """Bootstrap and auxiliary estimates of the SV log-likelihood agree within MC error."""
    sv = StochasticVolatility(-1.0, 0.9, 0.3)
    _, ys_sv = sv.simulate(jax.random.key(4), 100)
    est = {
        m: np.array(
            [particle_filter(sv, ys_sv, 500, method=m, seed=s).log_likelihood for s in range(10)]
        )
        for m in ("bootstrap", "auxiliary")
    }
    se = np.sqrt(sum(v.var(ddof=1) / v.size for v in est.values()))
    assert abs(est["bootstrap"].mean() - est["auxiliary"].mean()) < 4 * se + 0.05


def test_validation_errors():
    bad = YS.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"ys.*finite"):
        particle_filter(LG, bad)
    with pytest.raises(ValueError, match="particles"):
        particle_filter(LG, YS, particles=0)
    with pytest.raises(TypeError, match="particles"):
        particle_filter(LG, YS, particles=10.5)
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        particle_filter(LG, YS, method="foo")
    with pytest.raises(ValueError, match="unknown resampling 'foo'"):
        particle_filter(LG, YS, resampling="foo")
    with pytest.raises(ValueError, match="ess_threshold"):
        particle_filter(LG, YS, ess_threshold=2.0)
    with pytest.raises(ValueError, match="shape"):
        particle_filter(LG, np.zeros((50, 3)))
    with pytest.raises(ValueError, match="shape"):
        particle_filter(LG, np.zeros(50))
    with pytest.raises(ValueError, match="proposal"):
        particle_filter(LG, YS, method="guided")
    with pytest.raises(TypeError, match="StateSpaceModel"):
        particle_filter(object(), YS)
    with pytest.raises(TypeError, match="transition"):
        StateSpaceModel(lambda: dist.Normal(), 3, lambda x, t: dist.Normal(x))


def test_options_a_method_cannot_use_are_refused_by_name():
    """A proposal given to the bootstrap filter was silently ignored (an absurd N(100, 0.01)
    gave the log-likelihood of none); the auxiliary filter on a transition without a mean
    failed with an empty NotImplementedError, or, for a Cauchy (mean NaN), blamed the weights."""
    prop, prop0 = LG.optimal_proposal()
    with pytest.raises(ValueError, match="method='bootstrap'.*would ignore `proposal`"):
        particle_filter(LG, YS, proposal=prop, proposal0=prop0)
    walk = lambda x, t: dist.Cauchy(0.9 * x, 0.5)  # noqa: E731
    cauchy = StateSpaceModel(lambda: dist.Normal(), walk, lambda x, t: dist.Normal(x, 0.3))
    ys = np.array([0.1, -0.2, 0.4])
    with pytest.raises(ValueError, match=r"method='auxiliary'.*\.mean.*\(nan\)"):
        particle_filter(cauchy, ys, method="auxiliary")
    assert np.isfinite(particle_filter(cauchy, ys, particles=50).log_likelihood)
    with pytest.raises(ValueError, match="^pmmh: unknown resampling 'foo'"):
        pmmh(_ar1_builder, PRIOR, np.zeros((5, 1)), draws=2, particles=4, resampling="foo")


def test_observation_outside_its_support_is_named():
    """A count of 0.5 under a Poisson, or 11 successes of 10 trials, has density zero under
    every particle: refused before compiling, naming y_t and the support."""
    walk = (lambda: dist.Normal(0.0, 1.0), lambda x, t: dist.Normal(0.9 * x, 0.5))
    poisson = StateSpaceModel(*walk, lambda x, t: dist.Poisson(jnp.exp(x)))
    with pytest.raises(ValueError, match=r"ys\[2\] = 0.5 is outside the support.*Integer"):
        particle_filter(poisson, np.array([1.0, 2.0, 0.5, 3.0]))
    binomial = StateSpaceModel(*walk, lambda x, t: dist.Binomial(10, jax.nn.sigmoid(x)))
    with pytest.raises(ValueError, match=r"ys\[1\] = 11.0 is outside"):
        particle_filter(binomial, np.array([3.0, 11.0]))
    # a support that moves with the state is left to the filter, and so is a masked
    # observation, whose masked entries hold a filler (-1 here)
    uniform = StateSpaceModel(*walk, lambda x, t: dist.Uniform(x - 3.0, x + 3.0))
    assert np.isfinite(particle_filter(uniform, np.array([0.1, 0.2]), particles=50).log_likelihood)
    labels = StateSpaceModel(*walk, lambda x, t: dist.Categorical(logits=jnp.stack([x, 0.0, -x])))
    assert np.isfinite(particle_filter(labels, np.array([0, 2, 1, 1]), particles=50).log_likelihood)
    with pytest.raises(ValueError, match=r"ys\[1\] = 3 is outside"):
        particle_filter(labels, np.array([0, 3, 1]))
    ys = np.array([1.0, 2.0, -1.0, 3.0])
    seen = jnp.asarray(ys >= 0)
    masked = StateSpaceModel(*walk, lambda x, t: dist.Poisson(jnp.exp(x)).mask(seen[t]))
    assert np.isfinite(particle_filter(masked, ys, particles=50).log_likelihood)


def test_all_weights_zero_raises():
    ssm = StateSpaceModel(
        init=lambda: dist.Normal(0.0, 1.0),
        transition=lambda x, t: dist.Normal(x, 1.0),
        observation=lambda x, t: dist.Delta(x),  # continuous y is never exactly x
    )
    with pytest.raises(FloatingPointError, match="all particle weights are zero at step t=0"):
        particle_filter(ssm, np.linspace(0, 1, 5), particles=16)


def _ar1_builder(p):
    return LinearGaussian(
        jnp.reshape(p["phi"], (1, 1)),
        jnp.eye(1),
        0.5 * jnp.eye(1),
        jnp.reshape(p["sigma_y"] ** 2, (1, 1)),
        jnp.zeros(1),
        jnp.eye(1),
    )


PRIOR = {"phi": dist.Uniform(-1.0, 1.0), "sigma_y": dist.HalfNormal(2.0)}


def test_pmmh_smoke_and_errors():
    _, ys = _ar1_builder({"phi": 0.8, "sigma_y": 0.7}).simulate(jax.random.key(0), 30)
    res = pmmh(_ar1_builder, PRIOR, ys, draws=30, particles=32, chains=2, seed=0)
    assert res.samples["phi"].shape == (2, 30) and res.samples["sigma_y"].shape == (2, 30)
    assert np.all(np.abs(res.samples["phi"]) < 1) and np.all(res.samples["sigma_y"] > 0)
    acceptance = res.stats["acceptance_rate"]  # per draw, as ppl.mcmc's
    assert acceptance.shape == (2, 30) and np.all((acceptance >= 0) & (acceptance <= 1))
    chain_rate = acceptance.mean(axis=1)
    assert np.all((chain_rate > 0) & (chain_rate < 1))
    lls = res.stats["log_likelihood_estimate"]
    assert lls.shape == (2, 30) and np.all(np.isfinite(lls))
    assert "posterior" in group_names(res.to_arviz())
    with pytest.raises(TypeError, match="prior"):
        pmmh(_ar1_builder, [], ys)
    with pytest.raises(ValueError, match="proposal_cov"):
        pmmh(_ar1_builder, PRIOR, ys, proposal_cov=np.eye(3))
    with pytest.raises(ValueError, match="ys"):
        pmmh(_ar1_builder, PRIOR, np.full((30, 1), np.nan))


def test_pmmh_refuses_by_name_what_used_to_fail_raw_or_pass_silently():
    from numpyro.distributions import constraints

    ys = np.zeros((5, 1))

    def with_float(p):  # runs on a prior draw, not on the chains' traced parameters
        return _ar1_builder({"phi": float(p["phi"]), "sigma_y": p["sigma_y"]})

    def with_branch(p):
        return _ar1_builder({"phi": 0.5 if p["phi"] > 0 else 0.6, "sigma_y": p["sigma_y"]})

    for builder in (with_float, with_branch):
        with pytest.raises(ValueError, match="must accept traced parameters"):
            pmmh(builder, PRIOR, ys, draws=2, particles=4)
    improper = {**PRIOR, "phi": dist.ImproperUniform(constraints.real, (), ())}
    with pytest.raises(ValueError, match=r"prior\['phi'\] \(ImproperUniform\) cannot be sampled"):
        pmmh(_ar1_builder, improper, ys, draws=2, particles=4)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['zzz'\]"):
        pmmh(_ar1_builder, PRIOR, ys, init={"phi": 0.5, "sigma_y": 1.0, "zzz": 1.0})
    with pytest.raises(ValueError, match=r"misses \['sigma_y'\]"):
        pmmh(_ar1_builder, PRIOR, ys, init={"phi": 0.5})


PMMH_SMALL = dict(draws=12, warmup=4, particles=8, chains=2, seed=3)


def _small_ar1_data():
    return _ar1_builder({"phi": 0.8, "sigma_y": 0.7}).simulate(jax.random.key(0), 10)[1]


def test_pmmh_ctrl_c_returns_the_draws_so_far(monkeypatch):
    """Ctrl-C after the warm-up returns the first draws of the uninterrupted run (same chunks,
    so one compilation), with a warning."""
    import ppl.state_space as state_space

    ys = _small_ar1_data()
    whole = pmmh(_ar1_builder, PRIOR, ys, progress_bar=False, chunk_size=5, **PMMH_SMALL)
    assert not whole.attrs["partial"]

    class InterruptingBar(state_space.tqdm):
        calls = 0

        def update(self, n=1):
            InterruptingBar.calls += 1
            if InterruptingBar.calls > 2:  # after the third chunk
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(state_space, "tqdm", InterruptingBar)
    with pytest.warns(UserWarning, match="pmmh interrupted after 14 of 16 iterations"):
        part = pmmh(_ar1_builder, PRIOR, ys, chunk_size=5, **PMMH_SMALL)
    assert part.attrs["partial"] and part.samples["phi"].shape == (2, 10)
    np.testing.assert_array_equal(part.samples["phi"], whole.samples["phi"][:, :10])


@pytest.mark.slow
def test_pmmh_numbers_do_not_depend_on_the_chunk_size():
    ys = _small_ar1_data()
    whole = pmmh(_ar1_builder, PRIOR, ys, progress_bar=False, **PMMH_SMALL)
    chunked = pmmh(_ar1_builder, PRIOR, ys, progress_bar=False, chunk_size=5, **PMMH_SMALL)
    for name in PRIOR:
        np.testing.assert_array_equal(chunked.samples[name], whole.samples[name])
    np.testing.assert_array_equal(
        chunked.stats["log_likelihood_estimate"], whole.stats["log_likelihood_estimate"]
    )


@pytest.mark.slow
def test_pmmh_recovers_ar1_parameters():
    """PMMH posterior vs an exact grid posterior (Kalman likelihood) of an AR(1) with
    unknown phi and observation noise; and the truth lies within the posterior."""
    true = {"phi": 0.8, "sigma_y": 0.7}
    _, ys = _ar1_builder(true).simulate(jax.random.key(0), 200)
    res = pmmh(
        _ar1_builder,
        PRIOR,
        ys,
        draws=1000,
        warmup=200,
        particles=100,
        step_size=0.15,
        chains=4,
        seed=0,
    )
    phis, sys_ = np.linspace(0.3, 0.999, 120), np.linspace(0.2, 1.4, 120)

    @jax.jit
    def grid(a, b):
        def f(x, y):
            return _ar1_builder({"phi": x, "sigma_y": y}).kalman_filter(ys).log_likelihood + PRIOR[
                "sigma_y"
            ].log_prob(y)

        return jax.vmap(jax.vmap(f, (None, 0)), (0, None))(a, b)

    L = np.asarray(grid(jnp.asarray(phis), jnp.asarray(sys_)), np.float64)
    P = np.exp(L - L.max())
    P /= P.sum()
    for name, vals, marg in (("phi", phis, P.sum(1)), ("sigma_y", sys_, P.sum(0))):
        m = (marg * vals).sum()
        sd = np.sqrt((marg * vals**2).sum() - m**2)
        draws = res.samples[name]
        # ESS of the pooled chains is >= ~100, so MCSE <= sd / 10; allow 5 MCSE
        assert abs(draws.mean() - m) < 0.5 * sd, (name, draws.mean(), m, sd)
        assert abs(draws.std() / sd - 1) < 0.35, (name, draws.std(), sd)
        assert abs(true[name] - draws.mean()) < 3.5 * draws.std()
    assert np.all(res.stats["acceptance_rate"].mean(axis=1) > 0.05)


def test_nan_states_are_named_and_kept_out_of_the_filtering_summaries():
    """``sqrt`` of a state that can be negative: those particles get weight zero, but 0 * NaN
    made 13 of 20 filtering means, the summary and half the FFBS paths NaN, silently."""
    ssm = ppl.StateSpaceModel(
        init=lambda: dist.Normal(1.0, 1.0),
        transition=lambda x, t: dist.Normal(jnp.sqrt(x), 0.3),
        observation=lambda x, t: dist.Normal(x, 0.5),
    )
    with pytest.warns(UserWarning, match=r"particle state\(s\) were NaN or infinite"):
        pf = ppl.particle_filter(ssm, np.linspace(0.5, 2.0, 20), particles=300, seed=0)
    assert np.isfinite(pf.log_likelihood)
    assert np.all(np.isfinite(pf.filter_means))
    assert np.all(np.isfinite(pf.summary().to_numpy(dtype=float)))
    assert np.all(np.isfinite(pf.smooth(50, seed=1)))


def test_a_pmmh_chain_stuck_where_the_filter_fails_is_reported():
    """Observations 0.45 under Uniform(x - s, x + s) with x near 0: s = 0.1 has likelihood
    zero, and a chain started there never moves (-inf against -inf). ``diagnose()`` said "no
    problems found"."""
    ys = np.full(10, 0.45)

    def build(p):
        return ppl.StateSpaceModel(
            init=lambda: dist.Normal(0.0, 0.01),
            transition=lambda x, t: dist.Normal(x, 0.01),
            observation=lambda x, t: dist.Uniform(x - p["s"], x + p["s"]),
        )

    with pytest.warns(UserWarning, match=r"chain\(s\) \[0, 1\] never had a finite likelihood"):
        post = pmmh(
            build,
            {"s": dist.Uniform(0.0, 1.0)},
            ys,
            draws=20,
            particles=50,
            chains=2,
            step_size=0.05,
            init={"s": 0.1},
            progress_bar=False,
        )
    assert not post.diagnose().ok
