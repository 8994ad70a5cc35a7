"""Ten posteriordb reference posteriors as plain numpyro models.

Each posterior of the posteriordb benchmark set (https://github.com/stan-dev/posteriordb,
commit ``28f8d3d6e975315f42aa274a8399f21e07a43b30``) is written here as a numpyro model that
uses only ``numpyro.sample``, ``plate``, ``deterministic``, ``factor`` and ``obs=``. The target
density of every model equals the Stan model's density up to an additive constant, on the
same constrained parameters and with the same parameter names, so draws can be compared with
the shipped reference statistics (10 chains x 1,000 thinned rstan NUTS draws).

Usage::

    from models import posteriordb

    posteriordb.names()                       # the ten posterior names
    entry = posteriordb.load("arK-arK")       # PosteriorDBEntry(model, kwargs, reference)
    entry.model(**entry.kwargs)               # runs the model
    entry.reference["beta[1]"]["mean"]        # reference statistics, posteriordb names
    flat = posteriordb.flatten_draws(samples)  # {"beta[1]": (chains, draws), ...}

Data files live flat in ``models/data/``: ``pdb_<name>.json`` (the posteriordb data file,
byte-for-byte; diamonds is stored as ``pdb_diamonds-diamonds.npz`` instead) and
``pdb_<name>.reference.json`` (the reference statistics).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = [
    "PosteriorDBEntry",
    "names",
    "load",
    "flatten_draws",
    "reference_names",
    "compare",
    "ParameterCheck",
    "eight_schools_noncentered",
    "gp_regr",
    "ar_k",
    "arma11",
    "low_dim_gauss_mix",
    "kilpisjarvi",
    "blr",
    "diamonds",
    "kidscore_interaction",
    "logearn_interaction_z",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
POSTERIORDB_COMMIT = "28f8d3d6e975315f42aa274a8399f21e07a43b30"


class PosteriorDBEntry(NamedTuple):
    """A posteriordb posterior: ``model(**kwargs)`` runs it; ``reference`` holds its statistics.

    ``reference`` maps each posteriordb scalar name (``"beta[3]"``, 1-based) to a dict with
    ``mean``, ``sd`` (ddof=1), ``q05``, ``q50``, ``q95``, ``n_draws``, ``ess_bulk_posteriordb``,
    ``ess_tail_posteriordb``, ``rhat_posteriordb`` and ``mcse_mean_approx`` (= sd / sqrt(ess)).
    """

    model: Callable[..., None]
    kwargs: dict[str, Any]
    reference: dict[str, dict[str, float]]


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _half_cauchy(scale: float) -> dist.Distribution:
    # Cauchy(0, scale) restricted to (0, inf): density 2 * Cauchy(x | 0, scale), x > 0.
    return dist.HalfCauchy(scale)


def _half_student_t(df: float, scale: float) -> dist.Distribution:
    # Student-t(df, 0, scale) restricted to (0, inf). Folding a distribution symmetric about 0
    # doubles its density on x > 0, i.e. equals the restricted density up to a constant.
    return dist.FoldedDistribution(dist.StudentT(df, 0.0, scale))


def eight_schools_noncentered(y, sigma) -> None:
    r"""Eight schools, non-centred (posteriordb ``eight_schools_noncentered``).

    .. math::
        \mu \sim N(0, 5),\quad \tau \sim \text{Half-Cauchy}(5),\quad
        \tilde\theta_j \sim N(0, 1),\quad \theta_j = \mu + \tau\tilde\theta_j,\quad
        y_j \sim N(\theta_j, \sigma_j).

    ``theta`` is a deterministic site (it is what the reference reports); ``theta_trans`` is the
    sampled offset.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", _half_cauchy(5.0))
    with numpyro.plate("J", jnp.shape(sigma)[-1]):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def gp_regr(x, y) -> None:
    r"""GP regression hyperparameters with the latent GP integrated out (posteriordb ``gp_regr``).

    .. math::
        \rho \sim \text{Gamma}(25, 4),\ \alpha \sim \text{Half-N}(2),\ \sigma \sim \text{Half-N}(1),
        \quad C_{ij} = \alpha^2 \exp\!\big(-(x_i - x_j)^2 / (2\rho^2)\big) + \sigma\,\delta_{ij},
        \quad y \sim \text{MVN}(0, C).

    Trap: the noise enters the diagonal as ``sigma`` itself, not ``sigma**2``.
    """
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    x = jnp.asarray(x)
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-d2 / (2.0 * rho**2)) + sigma * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), cov), obs=y)


def ar_k(y, K: int = 5) -> None:
    r"""AR(K) with a conditional likelihood (posteriordb ``arK``).

    .. math::
        \alpha \sim N(0, 10),\ \beta_k \sim N(0, 10),\ \sigma \sim \text{Half-Cauchy}(2.5),\quad
        y_t \sim N\big(\alpha + \textstyle\sum_{k=1}^K \beta_k y_{t-k}, \sigma\big),\ t = K+1..T.

    The first K observations are conditioned on. The lag matrix is built with static slices,
    so ``K`` must be a Python int.
    """
    K = int(K)
    y = jnp.asarray(y)
    T = y.shape[0]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    with numpyro.plate("K", K):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", _half_cauchy(2.5))
    # lags[t - K, k - 1] = y[t - k] (0-based t = K..T-1, k = 1..K)
    lags = jnp.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=-1)
    with numpyro.plate("T_cond", T - K):
        numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])


def arma11(y) -> None:
    r"""ARMA(1,1) (posteriordb ``arma11``).

    .. math::
        \mu \sim N(0, 10),\ \phi \sim N(0, 2),\ \theta \sim N(0, 2),\
        \sigma \sim \text{Half-Cauchy}(2.5),\\
        \nu_1 = \mu + \phi\mu,\quad \nu_t = \mu + \phi y_{t-1} + \theta e_{t-1},\quad
        e_t = y_t - \nu_t,\quad e_t \sim N(0, \sigma),\ t = 1..T.

    The residual recursion is a ``jax.lax.scan``. The map y -> e is unit lower-triangular
    (Jacobian 1), so the density of the residuals is the density of ``y``. As in Stan's
    ``err ~ normal(0, sigma)`` the residuals, a function of the parameters, are the observed
    values of the site ``err`` (one term per time point, so LOO has a pointwise
    log-likelihood).
    """
    y = jnp.asarray(y)
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", _half_cauchy(2.5))
    # previous observation, with the pre-sample one replaced by mu
    y_prev = jnp.concatenate([jnp.reshape(mu, (1,)).astype(y.dtype), y[:-1]])

    def step(e_prev, inputs):
        y_t, y_tm1 = inputs
        e_t = y_t - (mu + phi * y_tm1 + theta * e_prev)
        return e_t, e_t

    _, err = jax.lax.scan(step, jnp.zeros((), dtype=y.dtype), (y, y_prev))
    with numpyro.plate("T", y.shape[-1]):
        numpyro.sample("err", dist.Normal(0.0, sigma), obs=err)


def low_dim_gauss_mix(y) -> None:
    r"""Two-component Gaussian mixture with ordered means (posteriordb ``low_dim_gauss_mix``).

    .. math::
        p(\mu) \propto N(\mu_1 | 0, 2) N(\mu_2 | 0, 2)\,1\{\mu_1 < \mu_2\},\
        \sigma_k \sim \text{Half-N}(2),\ \theta \sim \text{Beta}(5, 5),\\
        p(y_n) = \theta N(y_n | \mu_1, \sigma_1) + (1 - \theta) N(y_n | \mu_2, \sigma_2).

    The ordered prior is a flat density on ordered vectors plus the normal terms as a factor
    (no renormalisation, as in Stan's ``ordered[2] mu; mu ~ normal(0, 2);``).
    """
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum(-1))
    with numpyro.plate("components", 2):
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    probs = jnp.stack([theta, 1.0 - theta], axis=-1)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=probs), dist.Normal(mu, sigma))
    with numpyro.plate("N", jnp.shape(y)[-1]):
        numpyro.sample("y", mixture, obs=y)


def kilpisjarvi(x, y, pmualpha, psalpha, pmubeta, psbeta) -> None:
    r"""Linear trend with an uncentred covariate (posteriordb ``kilpisjarvi``).

    .. math::
        \alpha \sim N(\mu_\alpha, s_\alpha),\ \beta \sim N(\mu_\beta, s_\beta),\
        \sigma \propto 1 \text{ on } (0, \infty),\quad y_i \sim N(\alpha + \beta x_i, \sigma).
    """
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with numpyro.plate("N", jnp.shape(x)[-1]):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def blr(X, y) -> None:
    r"""Bayesian linear regression without intercept (posteriordb ``blr``).

    .. math::
        \beta_d \sim N(0, 10),\ \sigma \sim \text{Half-N}(10),\ y \sim N(X\beta, \sigma).
    """
    X = jnp.asarray(X)
    with numpyro.plate("D", X.shape[-1]):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def diamonds(Xc, Y) -> None:
    r"""brms linear model of log-price on centred predictors (posteriordb ``diamonds``).

    .. math::
        b_c \sim N(0, 1),\ \text{Intercept} \sim t_3(8, 10),\ \sigma \sim \text{Half-}t_3(0, 10),
        \quad Y_i \sim N(\text{Intercept} + X^c_i b, \sigma).

    ``Xc`` is the design matrix without its intercept column, each column centred.
    """
    Xc = jnp.asarray(Xc)
    with numpyro.plate("Kc", Xc.shape[-1]):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", _half_student_t(3.0, 10.0))
    with numpyro.plate("N", Xc.shape[0]):
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)


def kidscore_interaction(kid_score, mom_hs, mom_iq) -> None:
    r"""Kid IQ on mother's schooling and IQ with interaction (posteriordb ``kidscore_interaction``).

    .. math::
        \beta \propto 1 \text{ on } \mathbb R^4,\ \sigma \sim \text{Half-Cauchy}(2.5),\\
        \text{kid}_i \sim N(\beta_1 + \beta_2 hs_i + \beta_3 iq_i + \beta_4 hs_i iq_i, \sigma).
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (4,)))
    sigma = numpyro.sample("sigma", _half_cauchy(2.5))
    mean = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * (mom_hs * mom_iq)
    with numpyro.plate("N", jnp.shape(kid_score)[-1]):
        numpyro.sample("kid_score", dist.Normal(mean, sigma), obs=kid_score)


def logearn_interaction_z(log_earn, z, male) -> None:
    r"""Log earnings on standardised height, sex and interaction (``logearn_interaction_z``).

    .. math::
        \beta \propto 1 \text{ on } \mathbb R^4,\ \sigma \propto 1 \text{ on } (0, \infty),\\
        \log \text{earn}_i \sim N(\beta_1 + \beta_2 z_i + \beta_3 m_i + \beta_4 z_i m_i, \sigma).
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (4,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    mean = beta[0] + beta[1] * z + beta[2] * male + beta[3] * (z * male)
    with numpyro.plate("N", jnp.shape(log_earn)[-1]):
        numpyro.sample("log_earn", dist.Normal(mean, sigma), obs=log_earn)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _f(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def _read_json(name: str) -> dict[str, Any]:
    with open(DATA_DIR / f"pdb_{name}.json") as fh:
        return json.load(fh)


def _kw_eight_schools(d):
    return {"y": _f(d["y"]), "sigma": _f(d["sigma"])}


def _kw_gp_regr(d):
    return {"x": _f(d["x"]), "y": _f(d["y"])}


def _kw_ar_k(d):
    return {"y": _f(d["y"]), "K": int(d["K"])}


def _kw_arma11(d):
    return {"y": _f(d["y"])}


def _kw_low_dim_gauss_mix(d):
    return {"y": _f(d["y"])}


def _kw_kilpisjarvi(d):
    keys = ("pmualpha", "psalpha", "pmubeta", "psbeta")
    return {"x": _f(d["x"]), "y": _f(d["y"]), **{k: float(d[k]) for k in keys}}


def _kw_blr(d):
    return {"X": _f(d["X"]), "y": _f(d["y"])}


def _kw_kidiq(d):
    return {
        "kid_score": _f(d["kid_score"]),
        "mom_hs": _f(d["mom_hs"]),
        "mom_iq": _f(d["mom_iq"]),
    }


def _kw_earnings(d):
    height = _f(d["height"])
    z = (height - height.mean()) / height.std(ddof=1)
    return {"log_earn": np.log(_f(d["earn"])), "z": z, "male": _f(d["male"])}


def _diamonds_kwargs() -> dict[str, Any]:
    with np.load(DATA_DIR / "pdb_diamonds-diamonds.npz", allow_pickle=False) as f:
        X, Y = f["X"], f["Y"]
    Xnc = X[:, 1:]  # drop the all-ones intercept column
    return {"Xc": Xnc - Xnc.mean(axis=0), "Y": _f(Y)}


# name -> (model, kwargs builder from the parsed data.json; None = special loader)
_REGISTRY: dict[str, tuple[Callable[..., None], Callable[[dict], dict] | None]] = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, _kw_eight_schools),
    "gp_pois_regr-gp_regr": (gp_regr, _kw_gp_regr),
    "arK-arK": (ar_k, _kw_ar_k),
    "arma-arma11": (arma11, _kw_arma11),
    "low_dim_gauss_mix-low_dim_gauss_mix": (low_dim_gauss_mix, _kw_low_dim_gauss_mix),
    "kilpisjarvi_mod-kilpisjarvi": (kilpisjarvi, _kw_kilpisjarvi),
    "sblrc-blr": (blr, _kw_blr),
    "diamonds-diamonds": (diamonds, None),
    "kidiq-kidscore_interaction": (kidscore_interaction, _kw_kidiq),
    "earnings-logearn_interaction_z": (logearn_interaction_z, _kw_earnings),
}


def names() -> list[str]:
    """The posteriordb posterior names shipped here, e.g. ``"arK-arK"``."""
    return list(_REGISTRY)


@cache
def _reference(name: str) -> dict[str, dict[str, float]]:
    with open(DATA_DIR / f"pdb_{name}.reference.json") as fh:
        ref = json.load(fh)
    out = {}
    for p in ref["parameters"]:
        p = dict(p)
        out[p.pop("name")] = p
    return out


def load(name: str) -> PosteriorDBEntry:
    """Load one posterior: its numpyro model, the model's keyword data and the reference.

    ``kwargs`` holds NumPy arrays (float64; JAX casts them to its default float) and Python
    scalars; derived data (centred predictors, standardised height, ...) are computed here as
    each posterior's ``model.md`` prescribes.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown posteriordb posterior {name!r}; expected one of {names()}")
    model, build = _REGISTRY[name]
    kwargs = _diamonds_kwargs() if build is None else build(_read_json(name))
    reference = {k: dict(v) for k, v in _reference(name).items()}
    return PosteriorDBEntry(model=model, kwargs=kwargs, reference=reference)


def reference_names(name: str) -> list[str]:
    """The scalar parameter names of a posterior's reference, in the reference's order."""
    return list(_reference(name))


def flatten_draws(samples: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Split each site's draws into posteriordb scalar names.

    ``samples[site]`` is shaped ``(chains, draws, *shape)``. A scalar site keeps its name; an
    array site gives ``"site[i]"`` (``"site[i,j]"`` for matrices), 1-based, in row-major order.
    Each value is a ``(chains, draws)`` array.
    """
    out: dict[str, np.ndarray] = {}
    for site, value in samples.items():
        arr = np.asarray(value)
        if arr.ndim < 2:
            raise ValueError(
                f"site {site!r}: expected draws shaped (chains, draws, *shape), got {arr.shape}"
            )
        shape = arr.shape[2:]
        if not shape:
            out[site] = arr
            continue
        for idx in np.ndindex(*shape):
            label = ",".join(str(i + 1) for i in idx)
            out[f"{site}[{label}]"] = arr[(slice(None), slice(None), *idx)]
    return out


# --------------------------------------------------------------------------------------------
# comparison with the reference
# --------------------------------------------------------------------------------------------


class ParameterCheck(NamedTuple):
    """One scalar parameter of a run compared with the reference.

    ``z = (mean - ref_mean) / sqrt(mcse**2 + ref_mcse**2)`` where ``mcse`` is ArviZ's Monte
    Carlo standard error of the mean of the run and ``ref_mcse`` the reference's
    ``mcse_mean_approx``; ``sd_ratio = sd / ref_sd``. Fields are NaN when the run lacks the
    parameter.
    """

    name: str
    mean: float
    ref_mean: float
    sd: float
    ref_sd: float
    mcse: float
    ess_bulk: float
    z: float
    sd_ratio: float


def compare(
    reference: Mapping[str, Mapping[str, float]], samples: Mapping[str, Any]
) -> list[ParameterCheck]:
    """Compare draws with a reference, one row per reference scalar (reference order).

    ``samples`` maps site names to draws shaped ``(chains, draws, *shape)`` (deterministic
    sites included), as ``flatten_draws`` expects.
    """
    import arviz as az

    flat = flatten_draws(samples)
    rows = []
    for name, ref in reference.items():
        r_mean, r_sd, r_mcse = ref["mean"], ref["sd"], ref["mcse_mean_approx"]
        if name not in flat:
            nan = float("nan")
            rows.append(ParameterCheck(name, nan, r_mean, nan, r_sd, nan, nan, nan, nan))
            continue
        x = np.asarray(flat[name], dtype=np.float64)
        mean = float(x.mean())
        sd = float(x.std(ddof=1))
        ess = float(az.ess(x, method="bulk"))
        mcse = float(az.mcse(x, method="mean"))
        z = (mean - r_mean) / float(np.sqrt(mcse**2 + r_mcse**2))
        rows.append(ParameterCheck(name, mean, r_mean, sd, r_sd, mcse, ess, z, sd / r_sd))
    return rows
