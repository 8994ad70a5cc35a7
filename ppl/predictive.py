"""Prior and posterior predictive draws (numpyro's ``Predictive``, shaped for ArviZ)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import numpy as np
from numpyro.infer import Predictive

from ppl.model import compile_model
from ppl.posterior import Posterior
from ppl.validation import check_count, check_model_keywords, check_seed


def predictive(
    model: Callable,
    *args,
    posterior: Posterior | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    return_sites: list[str] | None = None,
    **model_kwargs,
) -> dict[str, np.ndarray]:
    """Draw from the prior predictive, or from the posterior predictive of ``posterior``.

    Pass observed data as ``None`` (e.g. ``y=None``) to have the observed sites simulated.

    * Prior (``posterior=None``): ``num_samples`` ancestral draws of every site, shaped
      ``(1, num_samples, ...)``. When ``posterior`` is not given nothing is attached.
    * Posterior: for each posterior draw, the observed sites are simulated given the latent
      values; arrays are shaped ``(chains, draws, ...)`` and are also stored on the posterior
      so that ``posterior.to_arviz()`` exports them: as ``posterior_predictive`` when they
      replicate the observed data (the model given the inputs it was fitted with, the data
      to simulate passed as ``None``), as ``predictions`` (ArviZ's group for out-of-sample
      predictions) when it was given other inputs, e.g. new covariates, of any shape.
    """
    check_model_keywords(model, args, predictive)
    key = check_seed(seed)
    if posterior is None:
        check_count("num_samples", num_samples)
        draws = Predictive(model, num_samples=num_samples, return_sites=return_sites)(
            key, *args, **model_kwargs
        )
        return {k: np.asarray(v)[None] for k, v in draws.items()}
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a ppl.Posterior, got {type(posterior).__name__}")
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
        if k not in compiled.latents
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
    return out


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
