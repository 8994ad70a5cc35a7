"""Prior and posterior predictive draws (numpyro's ``Predictive``, shaped for ArviZ)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import jax
import numpy as np
from numpyro.infer import Predictive

from ppl.diagnostics import warn_if_nonfinite
from ppl.model import compile_model, trace_model
from ppl.posterior import Posterior
from ppl.validation import check_count, check_model_keywords, check_numpyro_names, check_seed


def predictive(
    model: Callable,
    *args,
    posterior: Posterior | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    return_sites: list[str] | None = None,
    **model_kwargs,
) -> dict[str, np.ndarray]:
    """Draw from the prior predictive, or from the posterior predictive of ``posterior``.

    Pass observed data as ``None`` (e.g. ``y=None``) to have the observed sites simulated.

    * Prior (``posterior=None``): ``num_samples`` (default 1000) ancestral draws of every
      site, shaped ``(1, num_samples, ...)``. When ``posterior`` is not given nothing is
      attached.
    * Posterior: for each posterior draw, the observed sites are simulated given the latent
      values; arrays are shaped ``(chains, draws, ...)`` and are also stored on the posterior
      so that ``posterior.to_arviz()`` exports them: as ``posterior_predictive`` when they
      replicate the observed data (the model given the inputs it was fitted with, the data
      to simulate passed as ``None``), as ``predictions`` (ArviZ's group for out-of-sample
      predictions) when it was given other inputs, e.g. new covariates, of any shape.

    ``return_sites`` names the sites to return (each must be a site of the model). A latent
    site of the model that the posterior does not hold is drawn from its prior, with a
    warning (a posterior of another model, or a renamed site).
    """
    check_model_keywords(model, args, predictive)
    check_numpyro_names(model, model_kwargs, predictive)
    key = check_seed(seed)
    trace = trace_model(model, args, model_kwargs)  # a model that raises is reported here
    _check_return_sites(return_sites, trace)
    if posterior is None:
        num_samples = check_count("num_samples", 1000 if num_samples is None else num_samples)
        draws = Predictive(model, num_samples=num_samples, return_sites=return_sites)(
            key, *args, **model_kwargs
        )
        out = {k: np.asarray(v)[None] for k, v in draws.items()}
        warn_if_nonfinite(out, "ppl.predictive", stacklevel=2)
        return out
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a ppl.Posterior, got {type(posterior).__name__}")
    if num_samples is not None:
        raise ValueError(
            "num_samples is for the prior predictive; the posterior predictive has one draw "
            f"per posterior draw ({posterior.num_chains} x {posterior.num_draws} here)"
        )
    fitted_observed = posterior.observed_sites
    not_fitted = [  # latent here, and neither drawn nor observed in the fit
        n
        for n, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and n not in posterior.samples
        and n not in fitted_observed
    ]
    if not_fitted and not set(posterior.samples) & set(trace):
        raise ValueError(
            f"the posterior holds none of the model's sites (it holds "
            f"{sorted(posterior.samples)}, the model's latent sites are {not_fitted}): is it "
            "the posterior of another model?"
        )
    if not_fitted:
        warnings.warn(
            f"latent site(s) {not_fitted} of the model are not in the posterior (which holds "
            f"{sorted(posterior.samples)}): they are drawn from their prior",
            stacklevel=2,
        )
    compiled = posterior.compiled or compile_model(model, args, model_kwargs)
    chains, draws_per_chain = posterior.num_chains, posterior.num_draws
    latent = {
        k: jax.numpy.asarray(v.reshape(chains * draws_per_chain, *v.shape[2:]))
        for k, v in posterior.samples.items()
        if k in compiled.latents
    }
    sites = return_sites or None
    draws = Predictive(model, posterior_samples=latent, return_sites=sites)(
        key, *args, **model_kwargs
    )
    out = {
        k: np.asarray(v).reshape(chains, draws_per_chain, *np.shape(v)[1:])
        for k, v in draws.items()
        if k not in compiled.latents or (sites and k in sites)  # a latent site asked for by name
    }
    observed = {k: v for k, v in out.items() if k in compiled.observed}
    same_shapes = all(
        v.shape[2:] == np.shape(posterior.observed_data.get(k, v[0, 0]))
        for k, v in observed.items()
    )
    fitted = posterior.compiled
    same_inputs = fitted is None or _same_inputs(
        model, args, model_kwargs, fitted.args, fitted.kwargs
    )
    group = "posterior_predictive" if same_shapes and same_inputs else "predictions"
    posterior.predictive[group] = observed or out
    warn_if_nonfinite(out, "ppl.predictive", stacklevel=2)
    return out


def _check_return_sites(return_sites, trace) -> None:
    """``return_sites``: ``None`` or a list of names of the model's sites."""
    if return_sites is None:
        return
    if isinstance(return_sites, str) or not all(isinstance(n, str) for n in return_sites):
        raise TypeError(
            f"return_sites must be a list of site names, got {return_sites!r}"
            + (f" (write [{return_sites!r}])" if isinstance(return_sites, str) else "")
        )
    unknown = [n for n in return_sites if n not in trace]
    if unknown:
        sites = [n for n, s in trace.items() if s["type"] in ("sample", "deterministic")]
        raise ValueError(f"return_sites names unknown site(s) {unknown}; the model's are {sites}")


def _same_inputs(model, args, kwargs, fitted_args, fitted_kwargs) -> bool:
    """Whether the model is given the inputs it was fitted with (equal values, matched by
    parameter name whether passed by position or keyword, defaults filled in), the arguments
    passed as ``None`` (the data to simulate) aside: replicated data, not predictions at new
    inputs (new covariates of the data's shape included)."""
    try:
        signature = inspect.signature(model)
        given = signature.bind(*args, **kwargs)
        fitted = signature.bind(*fitted_args, **fitted_kwargs)
    except (TypeError, ValueError):  # no signature to bind to: compare as passed
        given = {**dict(enumerate(args)), **kwargs}
        fitted = {**dict(enumerate(fitted_args)), **fitted_kwargs}
    else:
        given.apply_defaults()
        fitted.apply_defaults()
        given, fitted = given.arguments, fitted.arguments
    if set(given) != set(fitted):
        return False
    return all(value is None or _equal_values(value, fitted[name]) for name, value in given.items())


def _equal_values(a, b) -> bool:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        return False
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return False
        try:  # NaN fillers of missing data (obs_mask) compare equal
            same = np.array_equal(x, y, equal_nan=True)
        except TypeError:  # not numbers
            same = np.array_equal(x, y)
        if not same:
            return False
    return True
