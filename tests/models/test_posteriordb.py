"""Tests of the posteriordb reference posteriors in ``models.posteriordb``.

Fast tests: every model's log density is finite at the reference means, the shipped data have
the shapes each ``model.md`` states, and the reference names match the model's sites. The
``slow`` test runs this library's NUTS on a subset and compares with the reference draws.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density

from models import posteriordb

NAMES = posteriordb.names()

# posterior -> (reference scalar names, unconstrained dimension) from each model.md
EXPECTED = {
    "eight_schools-eight_schools_noncentered": (
        [f"theta[{j}]" for j in range(1, 9)] + ["mu", "tau"],
        10,
    ),
    "gp_pois_regr-gp_regr": (["rho", "alpha", "sigma"], 3),
    "arK-arK": (["alpha"] + [f"beta[{k}]" for k in range(1, 6)] + ["sigma"], 7),
    "arma-arma11": (["mu", "phi", "theta", "sigma"], 4),
    "low_dim_gauss_mix-low_dim_gauss_mix": (
        ["mu[1]", "mu[2]", "sigma[1]", "sigma[2]", "theta"],
        5,
    ),
    "kilpisjarvi_mod-kilpisjarvi": (["alpha", "beta", "sigma"], 3),
    "sblrc-blr": ([f"beta[{d}]" for d in range(1, 6)] + ["sigma"], 6),
    "diamonds-diamonds": ([f"b[{c}]" for c in range(1, 25)] + ["Intercept", "sigma"], 26),
    "kidiq-kidscore_interaction": ([f"beta[{k}]" for k in range(1, 5)] + ["sigma"], 5),
    "earnings-logearn_interaction_z": ([f"beta[{k}]" for k in range(1, 5)] + ["sigma"], 5),
}

DATA_SHAPES = {
    "eight_schools-eight_schools_noncentered": {"y": (8,), "sigma": (8,)},
    "gp_pois_regr-gp_regr": {"x": (11,), "y": (11,)},
    "arK-arK": {"y": (200,)},
    "arma-arma11": {"y": (200,)},
    "low_dim_gauss_mix-low_dim_gauss_mix": {"y": (1000,)},
    "kilpisjarvi_mod-kilpisjarvi": {"x": (62,), "y": (62,)},
    "sblrc-blr": {"X": (100, 5), "y": (100,)},
    "diamonds-diamonds": {"Xc": (5000, 24), "Y": (5000,)},
    "kidiq-kidscore_interaction": {"kid_score": (434,), "mom_hs": (434,), "mom_iq": (434,)},
    "earnings-logearn_interaction_z": {"log_earn": (1192,), "z": (1192,), "male": (1192,)},
}


def _trace(entry):
    # init_to_uniform gives values to the improper-prior sites, which cannot be sampled
    model = handlers.substitute(handlers.seed(entry.model, 0), substitute_fn=init_to_uniform)
    return handlers.trace(model).get_trace(**entry.kwargs)


def _latent_sites(tr):
    return {
        k: v
        for k, v in tr.items()
        if v["type"] == "sample" and not v["is_observed"] and not v["infer"].get("is_auxiliary")
    }


def _params_at_reference(name, entry):
    """The model's sampled sites set to the reference means."""
    tr = _trace(entry)
    params = {}
    for site, node in _latent_sites(tr).items():
        shape = np.shape(node["value"])
        if shape:
            labels = [",".join(str(i + 1) for i in idx) for idx in np.ndindex(*shape)]
            vals = [entry.reference.get(f"{site}[{lab}]", {}).get("mean") for lab in labels]
        else:
            vals = [entry.reference.get(site, {}).get("mean")]
        if any(v is None for v in vals):
            continue
        params[site] = np.reshape(np.array(vals), shape)
    if name.startswith("eight_schools"):
        theta = np.array([entry.reference[f"theta[{j}]"]["mean"] for j in range(1, 9)])
        mu, tau = entry.reference["mu"]["mean"], entry.reference["tau"]["mean"]
        params["theta_trans"] = (theta - mu) / tau
    return params


def test_names():
    assert sorted(NAMES) == sorted(EXPECTED)
    assert len(NAMES) == 10


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown posteriordb posterior"):
        posteriordb.load("nope-nope")


@pytest.mark.parametrize("name", NAMES)
def test_entry_and_data_shapes(name):
    entry = posteriordb.load(name)
    assert isinstance(entry, posteriordb.PosteriorDBEntry)
    assert callable(entry.model)
    for key, shape in DATA_SHAPES[name].items():
        assert np.shape(entry.kwargs[key]) == shape, key
        assert np.all(np.isfinite(entry.kwargs[key])), key
    ref_names, _ = EXPECTED[name]
    assert list(entry.reference) == ref_names
    assert posteriordb.reference_names(name) == ref_names
    for stats in entry.reference.values():
        assert {"mean", "sd", "mcse_mean_approx"} <= set(stats)
        assert stats["sd"] > 0 and stats["mcse_mean_approx"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_reference_names_match_model_sites(name):
    """Every reference scalar is a (flattened) sample or deterministic site of the model."""
    entry = posteriordb.load(name)
    tr = _trace(entry)
    sites = {
        k: np.asarray(v["value"])[None, None]
        for k, v in tr.items()
        if (v["type"] == "sample" and not v["is_observed"]) or v["type"] == "deterministic"
    }
    flat = posteriordb.flatten_draws(sites)
    assert set(entry.reference) <= set(flat)
    _, dim = EXPECTED[name]
    latent = _latent_sites(tr)
    unconstrained = sum(
        int(np.size(biject_to(node["fn"].support).inv(node["value"]))) for node in latent.values()
    )
    assert unconstrained == dim


@pytest.mark.parametrize("name", NAMES)
def test_log_density_finite_at_reference_means(name):
    entry = posteriordb.load(name)
    params = _params_at_reference(name, entry)
    assert set(params) == set(_latent_sites(_trace(entry)))
    ld, _ = log_density(entry.model, (), entry.kwargs, params)
    assert np.isfinite(float(ld))


def test_derived_data():
    earn = posteriordb.load("earnings-logearn_interaction_z").kwargs
    assert abs(float(np.mean(earn["z"]))) < 1e-12
    assert float(np.std(earn["z"], ddof=1)) == pytest.approx(1.0)
    dia = posteriordb.load("diamonds-diamonds").kwargs
    np.testing.assert_allclose(dia["Xc"].mean(axis=0), 0.0, atol=1e-10)


def test_gp_regr_noise_is_sigma_not_sigma_squared():
    """Trap in gp_regr: the diagonal gets ``sigma``; a sigma**2 model gives another density."""
    import jax.numpy as jnp
    from jax.scipy.stats import multivariate_normal, norm

    entry = posteriordb.load("gp_pois_regr-gp_regr")
    x, y = entry.kwargs["x"], entry.kwargs["y"]
    rho, alpha, sigma = 6.0, 2.0, 1.7
    cov = alpha**2 * np.exp(-((x[:, None] - x[None]) ** 2) / (2 * rho**2)) + sigma * np.eye(11)
    expected = (
        multivariate_normal.logpdf(jnp.asarray(y), jnp.zeros(11), jnp.asarray(cov))
        + (25 - 1) * np.log(rho)
        - 4 * rho
        + norm.logpdf(alpha, 0, 2)
        + norm.logpdf(sigma, 0, 1)
    )
    params = {"rho": rho, "alpha": alpha, "sigma": sigma}
    ld, _ = log_density(entry.model, (), entry.kwargs, params)
    ld0, _ = log_density(entry.model, (), entry.kwargs, {**params, "sigma": 1.0})
    cov0 = cov - sigma * np.eye(11) + np.eye(11)
    expected0 = (
        multivariate_normal.logpdf(jnp.asarray(y), jnp.zeros(11), jnp.asarray(cov0))
        + (25 - 1) * np.log(rho)
        - 4 * rho
        + norm.logpdf(alpha, 0, 2)
        + norm.logpdf(1.0, 0, 1)
    )
    # equal up to the same additive constant (Gamma and half-normal normalisers)
    assert float(ld - ld0) == pytest.approx(float(expected - expected0), rel=1e-4)


def test_arma_residual_recursion():
    """The scan gives e[1] = y[1] - (mu + phi mu), e[t] = y[t] - mu - phi y[t-1] - theta e[t-1]."""
    from scipy.stats import norm

    entry = posteriordb.load("arma-arma11")
    y = entry.kwargs["y"]
    mu, phi, theta, sigma = 0.01, 0.9, -0.05, 0.2
    e = np.zeros_like(y)
    e[0] = y[0] - (mu + phi * mu)
    for t in range(1, len(y)):
        e[t] = y[t] - (mu + phi * y[t - 1] + theta * e[t - 1])
    params = {"mu": mu, "phi": phi, "theta": theta, "sigma": sigma}
    _, tr = log_density(entry.model, (), entry.kwargs, params)
    site = tr["err"]
    assert site["is_observed"]
    np.testing.assert_allclose(np.asarray(site["value"]), e, rtol=1e-4, atol=1e-6)
    pointwise = np.asarray(site["fn"].log_prob(site["value"]))
    assert pointwise.shape == y.shape  # one term per time point, for LOO
    assert float(pointwise.sum()) == pytest.approx(norm.logpdf(e, 0, sigma).sum(), rel=1e-5)


def test_ark_conditional_likelihood():
    from scipy.stats import norm

    entry = posteriordb.load("arK-arK")
    y, K = entry.kwargs["y"], entry.kwargs["K"]
    alpha, beta, sigma = 0.01, np.array([0.7, 0.4, 0.1, -0.03, -0.3]), 0.15
    mean = np.array([alpha + sum(beta[k] * y[t - k - 1] for k in range(K)) for t in range(K, 200)])
    params = {"alpha": alpha, "beta": beta, "sigma": sigma}
    _, tr = log_density(entry.model, (), entry.kwargs, params)
    ll = float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum())
    assert ll == pytest.approx(norm.logpdf(y[K:], mean, sigma).sum(), rel=1e-4)


def test_flatten_draws():
    samples = {
        "a": np.zeros((2, 3)),
        "b": np.arange(2 * 3 * 2).reshape(2, 3, 2),
        "c": np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2),
    }
    flat = posteriordb.flatten_draws(samples)
    assert list(flat) == ["a", "b[1]", "b[2]", "c[1,1]", "c[1,2]", "c[2,1]", "c[2,2]"]
    np.testing.assert_array_equal(flat["b[2]"], samples["b"][:, :, 1])
    np.testing.assert_array_equal(flat["c[2,1]"], samples["c"][:, :, 1, 0])
    assert all(v.shape == (2, 3) for v in flat.values())
    with pytest.raises(ValueError, match="site 'x'"):
        posteriordb.flatten_draws({"x": np.zeros(3)})


def test_compare_exact_reference_gives_zero_z():
    rng = np.random.default_rng(0)
    ref = {"m": {"mean": 0.0, "sd": 1.0, "mcse_mean_approx": 0.01}}
    draws = rng.standard_normal((4, 1000))
    draws = (draws - draws.mean()) / draws.std(ddof=1)
    (row,) = posteriordb.compare(ref, {"m": draws})
    assert row.z == pytest.approx(0.0, abs=1e-9)
    assert row.sd_ratio == pytest.approx(1.0)
    (row,) = posteriordb.compare(ref, {"other": draws})
    assert np.isnan(row.z)


# posteriors light enough for CI, with the kernel settings of bench/posteriordb_check.py
SLOW_SUBSET = {
    "eight_schools-eight_schools_noncentered": (False, 0.95),
    "earnings-logearn_interaction_z": (False, 0.8),
    "kidiq-kidscore_interaction": (True, 0.8),
    "low_dim_gauss_mix-low_dim_gauss_mix": (False, 0.8),
    "arK-arK": (False, 0.8),
    "gp_pois_regr-gp_regr": (False, 0.8),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW_SUBSET))
def test_ppl_nuts_matches_reference(name):
    """ppl NUTS (4 chains x 500 warm-up x 500 draws) against the posteriordb reference.

    |z| < 5 in combined MCSE units; sd within 10% (with bulk ESS ~1000 the sd's relative
    standard error is ~1/sqrt(2 ESS) ~ 2%, so the band is ~4-5 standard errors); no divergences.
    """
    import ppl

    try:
        from inference.mcmc import NUTS
    except ImportError:
        from inference import NUTS

    dense, target = SLOW_SUBSET[name]
    entry = posteriordb.load(name)
    post = ppl.mcmc(
        entry.model,
        kernel=NUTS(dense_mass=dense, target_accept=target),
        chains=4,
        warmup=500,
        draws=500,
        seed=0,
        progress_bar=False,
        **entry.kwargs,
    )
    rows = posteriordb.compare(entry.reference, post.samples)
    bad = [r for r in rows if not (abs(r.z) < 5 and 0.9 <= r.sd_ratio <= 1.1)]
    assert not bad, "\n".join(
        f"{r.name}: mean {r.mean:.4g} (ref {r.ref_mean:.4g}), z {r.z:+.2f}, "
        f"sd ratio {r.sd_ratio:.3f}, ess {r.ess_bulk:.0f}"
        for r in bad
    )
    assert int(np.sum(np.asarray(post.stats["diverging"]))) == 0
