"""``Posterior.diagnose()`` and the warning ``ppl.mcmc`` gives: each check fires on a run built to
fail it and stays quiet on a healthy one; R-hat and ESS agree with ArviZ's estimators."""

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

import inference
import ppl
from ppl.diagnostics import rhat_and_ess


def _ar1(rng, phi, chains, draws, k):
    x = np.zeros((chains, draws, k))
    noise = rng.standard_normal((chains, draws, k))
    for t in range(draws):
        x[:, t] = (phi * x[:, t - 1] if t else 0.0) + noise[:, t]
    return x


@pytest.mark.arviz
@pytest.mark.parametrize("phi", [-0.7, 0.0, 0.9, 0.999])
@pytest.mark.parametrize("chains, draws", [(1, 200), (4, 500), (2, 7), (3, 4), (8, 101)])
def test_rhat_and_ess_agree_with_arviz(phi, chains, draws):
    """Same estimator as az.rhat / az.ess(method="bulk" | "tail"), vectorised: odd and minimal
    draw counts, one chain, a shifted chain, ties (rounded draws, a value repeated as in
    rejected Metropolis steps)."""
    x = _ar1(np.random.default_rng(0), phi, chains, draws, 12)
    x[0] += 0.5
    x[..., 3] = np.round(x[..., 3])
    x[:, ::2, 4] = 0.1
    ds = xr.Dataset({"z": (("chain", "draw", "k"), x)})
    rhat, bulk, tail = rhat_and_ess(x)
    np.testing.assert_allclose(bulk, az.ess(ds, method="bulk")["z"].values, rtol=1e-10)
    # the paper's 5% / 95% quantiles, ArviZ 0.2x's default; ArviZ 1.x defaults to its CI
    # probability (0.89, i.e. 11% / 89%), hence prob given explicitly
    reference_tail = az.ess(ds, method="tail", prob=(0.05, 0.95))["z"].values
    np.testing.assert_allclose(tail, reference_tail, rtol=1e-10)
    if chains == 1:
        assert rhat is None
    else:
        np.testing.assert_allclose(rhat, az.rhat(ds)["z"].values, rtol=1e-10)


def normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", 20):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = np.random.default_rng(0).normal(0.7, 1.0, size=20)


def _mcmc_quietly(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = ppl.mcmc(*args, progress_bar=False, **kwargs)
    return post, [str(w.message) for w in caught if "sampling problems" in str(w.message)]


def test_a_healthy_run_passes_every_check_and_warns_nothing():
    post, warned = _mcmc_quietly(normal_mean, y=Y, chains=4, warmup=300, draws=500, seed=0)
    d = post.diagnose()
    assert d.ok and not warned, d.problems
    assert d.divergences == 0 and d.max_treedepth_hits == 0
    assert d.max_rhat[0] < 1.01 and d.min_ess_bulk[0] > 400 and d.min_ess_tail[0] > 400
    # E-BFMI is Betancourt's statistic on each chain's energies
    e = post.stats["energy"]
    np.testing.assert_allclose(
        d.e_bfmi,
        np.sum(np.diff(e, axis=1) ** 2, axis=1)
        / np.sum((e - e.mean(1, keepdims=True)) ** 2, axis=1),
        rtol=1e-5,
    )
    assert "no problems found" in str(d)


def bimodal():
    """Modes at -4 and +4 (sd 0.3) that NUTS cannot cross: each chain stays where it starts."""
    x = numpyro.sample("x", dist.Normal(0.0, 10.0))
    numpyro.factor("modes", jnp.logaddexp(-0.5 * ((x - 4) / 0.3) ** 2, -0.5 * ((x + 4) / 0.3) ** 2))


def test_chains_in_different_modes_fail_rhat_and_ess_and_warn():
    post, warned = _mcmc_quietly(bimodal, chains=8, warmup=200, draws=200, seed=0)
    signs = np.sign(post.samples["x"].mean(axis=1))
    assert set(signs) == {-1.0, 1.0}, signs  # the premise: both modes are occupied
    d = post.diagnose()
    assert d.max_rhat[0] > 1.1 and d.max_rhat[1] == "x"  # 1.70 here (ranks bound it)
    assert d.min_ess_bulk[0] < 100
    assert any(p.startswith("R-hat up to") for p in d.problems)
    assert any(p.startswith("bulk ESS down to") for p in d.problems)
    assert len(warned) == 1 and "R-hat up to" in warned[0]
    # thresholds are options
    assert not any("R-hat" in p for p in post.diagnose(max_rhat=100.0).problems)


def centred_eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("school", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_divergences_low_bfmi_and_tree_depth_are_reported():
    y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
    sigma = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
    post, warned = _mcmc_quietly(
        centred_eight_schools, sigma, y=y, chains=4, warmup=300, draws=300, seed=0
    )
    d = post.diagnose()
    assert d.divergences == int(post.stats["diverging"].sum()) > 0
    assert any(p.startswith(f"{d.divergences} divergent transition") for p in d.problems)
    assert len(warned) == 1 and "divergent" in warned[0]

    capped, _ = _mcmc_quietly(
        normal_mean,
        y=Y,
        kernel=inference.NUTS(max_tree_depth=1),
        chains=2,
        warmup=100,
        draws=100,
        seed=0,
    )
    d = capped.diagnose()
    assert d.max_treedepth_hits == int(capped.stats["reached_max_treedepth"].sum()) > 0
    assert any("maximum tree depth" in p for p in d.problems)


def test_low_e_bfmi_is_reported():
    """A synthetic energy trace whose draw-to-draw changes are small next to its spread (a
    slowly wandering energy): E-BFMI ~ 0.01 < 0.3."""
    post, _ = _mcmc_quietly(normal_mean, y=Y, chains=2, warmup=100, draws=200, seed=0)
    post.stats["energy"] = np.cumsum(np.random.default_rng(1).normal(size=(2, 200)), axis=1)
    d = post.diagnose()
    assert d.e_bfmi.max() < 0.3
    assert any(p.startswith("E-BFMI below 0.3 in chain(s) 0, 1") for p in d.problems)


def test_chains_that_never_move_give_an_infinite_rhat_not_a_crash():
    """Each chain constant at its own value (a Metropolis chain that rejected everything): the
    within-chain variance is zero, R-hat is inf (as ArviZ's), and the report says so."""
    post, _ = _mcmc_quietly(normal_mean, y=Y, chains=2, warmup=10, draws=20, seed=0)
    post.samples["mu"] = np.repeat(np.array([[0.56], [0.60]]), 20, axis=1)
    d = post.diagnose()
    assert d.max_rhat == (np.inf, "mu")
    assert any(p.startswith("R-hat up to inf (mu)") for p in d.problems)


def test_one_chain_skips_rhat_and_says_so():
    post, _ = _mcmc_quietly(normal_mean, y=Y, chains=1, warmup=200, draws=600, seed=0)
    d = post.diagnose()
    assert d.max_rhat is None and d.min_ess_bulk is not None
    assert "R-hat needs two chains or more" in str(d)


def test_fewer_than_four_draws_is_a_problem_not_a_pass():
    """R-hat and ESS cannot be computed from 3 draws; the report used to say "no problems"."""
    post, caught = _mcmc_quietly(normal_mean, y=Y, chains=4, warmup=10, draws=3, seed=0)
    d = post.diagnose()
    assert not d.ok and d.max_rhat is None
    assert any(p.startswith("only 3 draw(s) per chain") for p in d.problems)
    assert any("only 3 draw(s)" in message for message in caught)


def test_smc_diagnosis_passes_a_healthy_tempered_run():
    post = ppl.smc(normal_mean, y=Y, particles=400, runs=4, seed=0, progress_bar=False)
    d = post.diagnose()
    assert d.ok, str(d)
    assert d.runs == 4 and d.particles == 400 and d.distinct_fraction > 0.9
    assert d.log_evidence_sd < 0.2 and d.min_ess_runs[1] == "mu" and d.min_ess_runs[0] > 100
    assert 0.1 < d.min_acceptance[0] <= 1.0
    assert abs(d.min_ess_fraction[0] - 0.5) < 0.01  # the ladder's target_ess, met
    assert str(d).startswith("4 run(s) x 400 particles: no problems found")


def test_smc_warns_after_a_run_whose_checks_fail_and_not_after_a_healthy_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy run warns about nothing
        ppl.smc(normal_mean, y=Y, particles=400, seed=0, progress_bar=False)
    with pytest.warns(UserWarning, match="SMC sampling problems") as caught:
        ppl.smc(normal_mean, y=Y, particles=60, seed=0, progress_bar=False)
    assert "- only 60 distinct particle(s) in a run (< 100)" in str(caught[0].message)


def _smc_posterior(x, method="smc/tempered/rwmh", **fields):
    return ppl.Posterior(samples={"x": x}, attrs={"method": method}, **fields)


def test_each_smc_check_fires_on_a_run_built_to_fail_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 200, 2))
    healthy = _smc_posterior(
        x, stats={"log_marginal_likelihood": np.array([-3.0, -3.1, -2.9, -3.0])}
    )
    assert healthy.diagnose().ok, str(healthy.diagnose())

    stuck = _smc_posterior(np.repeat(x, 4, axis=1))  # 200 of 800 distinct
    assert any(
        p.startswith("only 25% of the particles are distinct") for p in stuck.diagnose().problems
    )
    # waste-free chains keep their rejected proposals' repeats: not a problem in itself
    stuck.attrs["waste_free"] = 10
    assert stuck.diagnose().ok, str(stuck.diagnose())

    rates = np.array([[np.nan, 0.5, 0.03], [np.nan, 0.4, 0.3], [np.nan] * 3, [np.nan] * 3])
    rejecting = _smc_posterior(x, stages={"acceptance_rate": rates})
    d = rejecting.diagnose()
    assert d.min_acceptance == (0.03, 0, 2)
    assert any("accepted 3.0% of proposals at stage 2" in p for p in d.problems)

    apart = x.copy()
    apart[3, :, 1] += 3.0  # one run in another mode
    log_z = np.array([-3.0, -3.0, -3.0, -6.0])
    disagreeing = _smc_posterior(apart, stats={"log_marginal_likelihood": log_z})
    d = disagreeing.diagnose()
    assert d.min_ess_runs[1] == "x[1]" and d.min_ess_runs[0] < 10
    assert any("spread by 1.50 nats" in p for p in d.problems)
    assert any(p.startswith("the runs disagree") for p in d.problems)

    ess = np.array([[180.0, 120.0, 1.5, 90.0]])
    degenerate = _smc_posterior(x[:1], "smc/diffusion/tds", stages={"ess": ess})
    d = degenerate.diagnose()
    assert d.min_ess_fraction == (1.5 / 200, 0, 2)
    assert any("ESS 0.8% of N at step 2" in p for p in d.problems)
    assert "runs >= 2" not in str(d)  # diffusion-time SMC has no runs= option
    # a tempered first stage resting on a few particles (likelihood zero on most of the prior)
    collapsed = _smc_posterior(x[:1], stages={"ess": np.array([[1.6, 110.0, 100.0]])})
    assert any("ESS 0.8% of N at stage 0" in p for p in collapsed.diagnose().problems)
    assert "runs >= 2 also check" in str(_smc_posterior(x[:1]).diagnose())
    biased = _smc_posterior(x[:1], "smc/diffusion/dps")
    assert any(p.startswith("DPS is a biased heuristic") for p in biased.diagnose().problems)

    tiny = _smc_posterior(x[:1, :5], "smc/diffusion/mcgdiff", stages={"ess": np.full((1, 3), 5.0)})
    assert any(p.startswith("only 5 distinct particle(s)") for p in tiny.diagnose().problems)
    two_runs = _smc_posterior(apart[2:], stats={"log_marginal_likelihood": np.array([-3.0, -3.1])})
    assert two_runs.diagnose().min_ess_runs is None  # one degree of freedom: not checked

    partial = ppl.Posterior(samples={"x": x}, attrs={"method": "smc/tempered/hmc", "partial": True})
    assert any("interrupted" in p for p in partial.diagnose().problems)


def test_diagnose_refuses_results_of_no_known_method():
    post = ppl.Posterior(samples={"x": np.zeros((1, 10))}, attrs={"method": "hand-made"})
    with pytest.raises(ValueError, match="diagnose\\(\\) checks Markov chains"):
        post.diagnose()


def test_non_finite_deterministic_and_predictive_draws_are_named():
    """``log`` of a latent that is negative half the time: NaN in half the draws of 'l', which
    reached the summaries silently (ArviZ logged "Array contains NaN-value", naming nothing)."""

    def model(y=None):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.deterministic("l", jnp.log(x))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    pattern = r"NaN or infinite values in 'l' \(\d+ of 60 values\)"
    with pytest.warns(UserWarning, match="ppl.mcmc: " + pattern):
        ppl.mcmc(model, y=0.0, chains=1, warmup=50, draws=60, progress_bar=False)
    with pytest.warns(UserWarning, match="ppl.predictive: " + pattern):
        ppl.predictive(model, num_samples=60)


def test_tempered_smc_names_nan_likelihoods():
    """``sqrt`` of a latent that is negative half the time under the prior: those particles'
    NaN likelihood counted as zero and the run returned an evidence of the rest, silently."""

    def model(y=None):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(jnp.sqrt(x), 0.5), obs=y)

    with pytest.warns(UserWarning, match=r"tempered SMC: \d+ particle\(s\) had a NaN log-lik"):
        ppl.smc(model, y=0.5, particles=200, progress_bar=False)
