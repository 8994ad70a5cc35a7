"""Prior and posterior predictive draws (numpyro's ``Predictive``, shaped for ArviZ)."""

from __future__ import annotations

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
      replicate the observed data (same shapes), as ``predictions`` (ArviZ's group for
      out-of-sample predictions) when the model was given other inputs, e.g. new covariates.
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
    replicates = all(
        v.shape[2:] == np.shape(posterior.observed_data.get(k, v[0, 0]))
        for k, v in observed.items()
    )
    group = "posterior_predictive" if observed and replicates else "predictions"
    posterior.predictive[group] = observed or out
    return out
