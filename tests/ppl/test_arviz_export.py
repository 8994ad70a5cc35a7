"""ArviZ export of every result type, on hand-made results (no inference, no compilation).

Runs under both ArviZ generations: the default CI job (ArviZ 0.2x, ``InferenceData``) and the
``arviz``-marker job of ``.ci/run`` (Python 3.12, ArviZ 1.x, ``xarray.DataTree``).
"""

import arviz as az
import numpy as np
import pytest
import xarray as xr

from ppl.arviz_io import ARVIZ_1, group_names
from ppl.compose import CompositionSamples
from ppl.diffusion import DiffusionSamples
from ppl.posterior import Posterior

pytestmark = pytest.mark.arviz

RNG = np.random.default_rng(0)
C, D, N = 2, 100, 4


def _posterior() -> Posterior:
    mu = RNG.normal(0.5, 0.2, (C, D))
    y = np.array([0.1, 0.6, 0.4, 0.9])
    return Posterior(
        samples={"mu": mu, "theta": RNG.normal(size=(C, D, 3))},
        stats={
            "lp": RNG.normal(size=(C, D)),
            "diverging": np.zeros((C, D), bool),
            "step_size": np.full((C, D), 0.3),
            "log_marginal_likelihood": np.array([-3.1, -3.0]),
        },
        log_evidence=-3.05,
        log_likelihood={"y": -0.5 * (y - mu[..., None]) ** 2 - 0.92},
        observed_data={"y": y},
        predictive={"posterior_predictive": {"y": RNG.normal(size=(C, D, N))}},
        stages={
            "ess": np.array([[100.0, 80.0, 90.0], [100.0, 70.0, np.nan]]),
            "temperature": np.array([[0.0, 0.4, 1.0], [0.0, 1.0, np.nan]]),
        },
        attrs={"method": "hand-made", "partial": False},
        site_dims={"y": ("data",), "theta": ("k",)},
    )


def test_posterior_groups_dims_loo_and_summary():
    post = _posterior()
    data = post.to_arviz()
    assert isinstance(data, xr.DataTree) == ARVIZ_1
    groups = group_names(data)
    for g in (
        "posterior",
        "sample_stats",
        "log_likelihood",
        "observed_data",
        "posterior_predictive",
        "smc_stages",
    ):
        assert g in groups, (g, groups)
    assert data.posterior["mu"].dims == ("chain", "draw")
    assert data.posterior["theta"].dims == ("chain", "draw", "k")
    assert data.log_likelihood["y"].dims == ("chain", "draw", "data")
    assert data.sample_stats["log_marginal_likelihood"].dims == ("chain",)
    assert data.smc_stages["ess"].dims == ("chain", "stage")
    loo = az.loo(data)
    elpd = loo.elpd_loo if hasattr(loo, "elpd_loo") else loo.elpd  # 0.2x, 1.x
    assert np.isfinite(float(elpd))
    table = post.summary(var_names=["mu"])
    assert "r_hat" in table.columns and abs(table.loc["mu", "mean"] - 0.5) < 0.1


def test_smc_summary_reports_between_run_error_not_chain_diagnostics():
    """SMC particles are no chain: no R-hat / autocorrelation ESS; the MCSE comes from the
    spread of independent runs. Runs of iid N(0, 1) particles with a known run offset: the
    between-run MCSE is sd(run means) / sqrt(R), computed here by hand."""
    runs, particles = 8, 400
    offsets = np.linspace(-0.1, 0.1, runs)
    x = RNG.normal(size=(runs, particles, 2)) + offsets[:, None, None]
    post = Posterior(samples={"x": x}, attrs={"method": "smc/tempered/hmc"})
    table = post.summary()
    assert "r_hat" not in table.columns and "ess_bulk" not in table.columns
    expected = x.mean(axis=1).std(axis=0, ddof=1) / np.sqrt(runs)
    # rounded as ArviZ rounds its own MCSE (3 decimals) and ESS (0)
    mcse = table.loc[["x[0]", "x[1]"], "mcse_mean"].to_numpy(float)
    np.testing.assert_allclose(mcse, np.round(expected, 3), atol=1e-12)
    pooled_var = x.reshape(-1, 2).var(axis=0, ddof=1)
    ess_runs = table.loc[["x[0]", "x[1]"], "ess_runs"].to_numpy(float)
    np.testing.assert_allclose(ess_runs, np.round(pooled_var / expected**2), atol=1e-9)
    one_run = Posterior(samples={"x": x[:1]}, attrs={"method": "smc/diffusion/tds"})
    assert "mcse_mean" not in one_run.summary().columns
    arviz_table = post.summary(kind="all")  # an explicit kind gives ArviZ's table, unchanged
    assert "r_hat" in arviz_table.columns and "ess_runs" not in arviz_table.columns


def test_netcdf_round_trip(tmp_path):
    path = tmp_path / "post.nc"
    _posterior().to_arviz().to_netcdf(path)
    back = az.from_netcdf(path)
    assert back.posterior["theta"].shape == (C, D, 3)
    np.testing.assert_array_equal(back.observed_data["y"], [0.1, 0.6, 0.4, 0.9])


def test_plots(tmp_path):
    post = _posterior()
    post.plot(path=str(tmp_path / "trace.png"), var_names=["mu"])
    assert (tmp_path / "trace.png").stat().st_size > 0
    fig = post.plot_stages(path=str(tmp_path / "stages.png"))
    assert len(fig.axes) == 2 and (tmp_path / "stages.png").stat().st_size > 0


@pytest.mark.parametrize("kind", ["diffusion", "composition"])
def test_diffusion_results(kind):
    x = RNG.normal(size=(50, 2))
    if kind == "diffusion":
        res = DiffusionSamples(x, "euler_maruyama", 10, "uniform", 0)
    else:
        res = CompositionSamples(x, -0.3, np.ones(10), None, "fkc", 10, 0, None)
    data = res.to_arviz()
    assert dict(data.posterior["x"].sizes) == {"chain": 1, "draw": 50, "x_dim": 2}
    assert "posterior" in group_names(data)
    assert az.summary(data)["mean"].shape == (2,)
    table = res.summary()
    np.testing.assert_allclose(table["mean"], x.mean(axis=0), atol=0.01)
    assert "r_hat" not in table.columns  # particles / independent draws: no chain diagnostics


def test_plate_names_land_on_their_own_axes():
    """A plate at dim=-2 names the second batch axis from the right (the site's value is
    (4, 1)); an event axis and a deterministic site inside a plate are named right too."""
    import numpyro
    import numpyro.distributions as dist

    from ppl.model import compile_model

    def model(y):
        with numpyro.plate("groups", 4, dim=-2):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", 3):
            b = numpyro.sample("b", dist.MultivariateNormal(np.zeros(2), np.eye(2)))
            numpyro.deterministic("mu", a.sum() + b[:, 0])
            numpyro.deterministic("b_exp", np.exp(b))  # (3, 2) in the plate: a trailing axis
            numpyro.deterministic("b_sum", b.sum())  # a scalar inside the plate: no axis
            numpyro.sample("y", dist.Normal(b[:, 0], 1.0), obs=y)
        with numpyro.plate("g", 3):  # plate size = event size: the plate was on the last axis
            w = numpyro.sample("w", dist.Dirichlet(np.array([1.0, 2.0, 3.0])))
            numpyro.deterministic("w2", 2 * w)

    y = np.array([0.1, 0.2, 0.3])
    compiled = compile_model(model, (y,), {})
    assert compiled.site_dims["a"] == ("groups", None)
    assert compiled.site_dims["b"] == ("n", None)
    assert compiled.site_dims["mu"] == ("n",)
    # the plate used to be put on the last axis: 'n' of length 2, and ArviZ refused the export
    assert compiled.site_dims["b_exp"] == ("n", None) and compiled.site_dims["b_sum"] == ()
    assert compiled.site_dims["w"] == compiled.site_dims["w2"] == ("g", None)
    post = Posterior(
        samples={
            "a": np.zeros((C, D, 4, 1)),
            "b": np.zeros((C, D, 3, 2)),
            "mu": np.zeros((C, D, 3)),
        },
        log_likelihood={"y": np.zeros((C, D, 3))},
        observed_data={"y": y},
        site_dims=compiled.site_dims,
    )
    data = post.to_arviz()
    assert data.posterior["a"].dims == ("chain", "draw", "groups", "a_dim_1")
    assert data.posterior["b"].dims == ("chain", "draw", "n", "b_dim_1")
    assert data.posterior["mu"].dims == ("chain", "draw", "n")
    assert data.observed_data["y"].dims == ("n",) and data.log_likelihood["y"].dims[-1] == "n"
    # an observed site with an event axis: its log-likelihood has the plate axis only (it was
    # named as the event axis, 'Y_dim_0', while observed_data said 'n')
    vector = Posterior(
        samples={"mu": np.zeros((C, D, 2))},
        log_likelihood={"Y": np.zeros((C, D, 3))},
        observed_data={"Y": np.zeros((3, 2))},
        site_dims={"Y": ("n", None)},
    ).to_arviz()
    assert vector.log_likelihood["Y"].dims == ("chain", "draw", "n")
    assert vector.observed_data["Y"].dims == ("n", "Y_dim_1")


def test_a_site_named_like_a_dimension_is_refused_not_dropped():
    """A site named ``draw`` became an xarray coordinate and ArviZ dropped the whole
    posterior group without a word (``summary()`` then summarised the log-likelihood)."""
    post = Posterior(samples={"draw": np.zeros((C, D)), "mu": np.zeros((C, D))})
    with pytest.raises(ValueError, match=r"site\(s\) \['draw'\] share their name with a dim"):
        post.to_arviz()


def test_summary_of_float32_draws_does_not_overflow():
    """Finite float32 draws up to 3e37 (a LogNormal(0, 100) posterior): ArviZ's sd in float32
    overflowed to inf."""
    draws = np.float32(3e37) * np.linspace(0.0, 1.0, C * D, dtype=np.float32).reshape(C, D)
    table = Posterior(samples={"x": draws}).summary()
    assert np.isfinite(table.loc["x", "sd"]) and table.loc["x", "sd"] > 1e36


def test_user_dims_and_coords_label_every_group_that_has_them(tmp_path):
    """``dims=`` renames a site's axes and ``coords=`` labels a dim, as ``az.from_numpyro``:
    in the posterior, log-likelihood, observed-data and predictive groups alike; and the
    labels survive a NetCDF round trip (where the selection by label is what users do)."""
    post = _posterior()
    names = ["a", "b", "c", "d"]
    data = post.to_arviz(dims={"y": ["obs_id"], "theta": ["group"]}, coords={"obs_id": names})
    for group in ("log_likelihood", "observed_data", "posterior_predictive"):
        assert data[group]["y"].dims[-1] == "obs_id", group
        assert list(data[group]["y"].coords["obs_id"].values) == names, group
    assert data["posterior"]["theta"].dims == ("chain", "draw", "group")
    data.to_netcdf(tmp_path / "labelled.nc")
    back = az.from_netcdf(tmp_path / "labelled.nc")
    np.testing.assert_array_equal(
        back["observed_data"]["y"].sel(obs_id="c").values, post.observed_data["y"][2]
    )
    # plate names (the default dims) take coords too, and the unlabelled dims keep 0, 1, ...
    data = post.to_arviz(coords={"k": ["x", "y", "z"]})
    assert list(data["posterior"]["theta"].coords["k"].values) == ["x", "y", "z"]
    assert list(data["log_likelihood"]["y"].coords["data"].values) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coords": {"dat": [0, 1, 2, 3]}}, "coords names dim 'dat'"),
        ({"coords": {"data": [0, 1]}}, r"coords\['data'\] must hold 4 labels"),
        ({"coords": [("data", [0, 1, 2, 3])]}, "coords must be a dict"),
        ({"dims": {"thetaa": ["k"]}}, "dims names site 'thetaa'"),
        ({"dims": {"theta": ["k", "j"]}}, r"dims\['theta'\] names 2 axes"),
        ({"dims": {"theta": "k"}}, "list of dim names"),
        ({"dims": {"theta": ["draw"]}}, "sample dims"),
    ],
)
def test_bad_dims_and_coords_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        _posterior().to_arviz(**kwargs)


def test_prior_draws_split_into_prior_and_prior_predictive():
    """``to_arviz(prior=...)`` as ``az.from_numpyro(prior=...)``: the sites observed in the
    fit go to ``prior_predictive`` (with the observed site's dims), the rest to ``prior``."""
    post = _posterior()
    prior = {"mu": RNG.normal(size=(1, 50)), "y": RNG.normal(size=(1, 50, N))}
    data = post.to_arviz(prior=prior, coords={"data": list("abcd")})
    assert set(data["prior"].data_vars) == {"mu"}
    assert set(data["prior_predictive"].data_vars) == {"y"}
    assert data["prior_predictive"]["y"].dims == ("chain", "draw", "data")
    assert list(data["prior_predictive"]["y"].coords["data"].values) == list("abcd")
    np.testing.assert_array_equal(data["prior"]["mu"].values, prior["mu"])
    with pytest.raises(ValueError, match=r"\['mu'\] lack the \(chains, draws\)"):
        post.to_arviz(prior={"mu": np.zeros(50)})
    with pytest.raises(TypeError, match="prior must be a non-empty dict"):
        post.to_arviz(prior=[np.zeros((1, 50))])
