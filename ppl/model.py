"""Compile a probabilistic program into what the inference backends consume.

A model is a Python function that calls numpyro primitives (``sample``, ``plate``,
``deterministic``, ``factor``, ``sample(..., obs=...)``). Tracing it once with numpyro's
effect handlers gives its sites; from those we build

* the log density of the latent sites on unconstrained space,

  .. math:: \\log \\pi(z) = \\sum_{\\text{latent } s} \\log p_s(T_s(z_s))
            + \\sum_{\\text{observed } s} \\log p_s(y_s) + \\sum_s \\log |\\det J_{T_s}(z_s)|,

  where :math:`T_s` = ``biject_to(support_s)`` (numpyro's transforms, the Jacobian added here
  once), split into a *prior* part (latent sites and Jacobians) and a *likelihood* part
  (observed sites and ``factor`` terms) for tempering; discrete latent sites ``k`` with a
  finite support are summed out, :math:`\\log \\sum_k \\pi(z, k)`, by numpyro's enumeration
  (``funsor``), and drawn afterwards from :math:`p(k \\mid z, y)`;
* initial points drawn Stan-style, uniformly in ``(-2, 2)`` on unconstrained space and redrawn
  until the log density and its gradient are finite;
* maps between the flat unconstrained vector and the dict of constrained site values,
  deterministic sites included;
* the pointwise log-likelihood of every observed site (for LOO / WAIC).

Every check that can fail on user input runs here, on the host, before any compilation.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import types
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.extend import core as jax_core
from jax.flatten_util import ravel_pytree
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import IdentityTransform, biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.util import log_likelihood as _numpyro_log_likelihood

from inference import rng

INIT_RADIUS = 2.0
JACOBIAN_SUFFIX = "__log_det_jacobian"
INIT_ATTEMPTS = 100


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site: its constrained and unconstrained shapes, and the bijection of its
    support as traced (for shapes and event dimensions only: the density and the maps between
    spaces rebuild each site's bijection from its support in every run of the model)."""

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    transform: Any
    is_diffusion_prior: bool = False


@dataclass
class CompiledModel:
    """A model turned into functions of a flat unconstrained vector of size ``dim``."""

    model: Callable
    args: tuple
    kwargs: dict
    latents: dict[str, LatentSite]
    observed: dict[str, np.ndarray]
    deterministic: list[str]
    factors: list[str]
    dim: int
    unravel: Callable
    site_dims: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    enumerated: tuple[str, ...] = ()
    enumerated_in_scan: bool = False
    max_plate_nesting: int = 0
    imputed: tuple[str, ...] = ()
    masked_latents: tuple[str, ...] = ()
    scaled_latents: tuple[str, ...] = ()
    computed_observations: tuple[str, ...] = ()

    @property
    def observed_data(self) -> dict[str, np.ndarray]:
        """The observed values that are data: sites whose ``obs=`` the model computes from
        latent values (a residual, a ``Delta`` at a function of parameters) are left out, as
        their traced value is one arbitrary point, not an observation."""
        return {n: v for n, v in self.observed.items() if n not in self.computed_observations}

    @cached_property
    def traceable_model(self) -> Callable:
        """The model with host ``obs=`` values (NumPy arrays and scalars, Python numbers and
        lists; integral floats of a discrete site as integers) handed to numpyro as JAX
        arrays: under ``jit`` a host value compared with a traced bound (``Uniform(lo, hi)``
        observing data, with latent ``lo``, ``hi``: numpyro's support check) would raise
        ``TracerArrayConversionError``, and a list would meet a tracer in arithmetic."""

        def as_jax(site):
            value = site["value"]
            if site["type"] != "sample" or not site["is_observed"]:
                return None
            in_scan = "_scan_current_index" in site["infer"]  # its steps index the data
            scalar = isinstance(value, np.generic | int | float) and not in_scan
            if not (isinstance(value, np.ndarray | list | tuple) or scalar):
                return None
            array = np.asarray(value)
            if site["fn"].support.is_discrete and array.dtype.kind == "f":
                if np.all(np.isfinite(array)) and np.all(array == np.round(array)):
                    array = array.astype(np.int32)  # Categorical indexes with its labels
            return jnp.asarray(array)

        return handlers.substitute(self.model, substitute_fn=as_jax)

    # -- maps between spaces -------------------------------------------------------------
    def _constrained_model(self, flat) -> Callable:
        """The model with every continuous latent site set from the flat unconstrained vector.

        Each site's bijection is ``biject_to`` of its support *as the model builds it in this
        run*, so a support that depends on other latent values (``Uniform(a, a + 2)`` with a
        latent ``a``, a truncation at a latent bound) is followed exactly; the log-Jacobian of
        each site enters the trace as a ``factor`` site named ``<site>`` + ``JACOBIAN_SUFFIX``,
        inside the site's plates and ``scale`` handlers, as numpyro's ``potential_energy``
        does (``numpyro.infer.util._unconstrain_reparam``); ``scan`` bodies see it too.
        Enumerated discrete sites are left to the handlers around it.
        """
        unconstrained = self.unravel(flat)

        def constrain(site):
            name = site["name"]
            if site["type"] != "sample" or name not in unconstrained:
                return None
            latent = self.latents[name]
            u = unconstrained[name]
            step = site["infer"].get("_scan_current_index")
            if step is not None and jnp.ndim(u) > len(site["fn"].shape()) - (
                latent.transform.codomain.event_dim - latent.transform.domain.event_dim
            ):
                u = u[step]  # inside numpyro's scan: this step's slice of the sequence
            if latent.is_diffusion_prior:
                return u
            transform = biject_to(site["fn"].support)
            value = transform(u)
            if not _is_identity(transform):
                log_det = transform.log_abs_det_jacobian(u, value)
                extra = jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape)
                numpyro.factor(name + JACOBIAN_SUFFIX, sum_rightmost(log_det, extra))
            return value

        return handlers.substitute(self.traceable_model, substitute_fn=constrain)

    def _unconstrained_trace(self, flat):
        """The trace of :meth:`_constrained_model` (enumerated sites drawn from their priors,
        with a fixed seed: use it for continuous sites only)."""
        model = handlers.seed(self._constrained_model(flat), rng_seed=0)
        return handlers.trace(model).get_trace(*self.args, **self.kwargs)

    def _enumerate(self, model: Callable) -> Callable:
        """``model`` with every discrete site enumerated in parallel, in dimensions to the left
        of the plates (numpyro's ``enum(config_enumerate(model))``)."""
        from numpyro.contrib.funsor import config_enumerate, enum

        return enum(config_enumerate(model), first_available_dim=-self.max_plate_nesting - 1)

    def _marginal_log_density(self, model: Callable):
        """``log sum_z p(z, ...)`` over the enumerated sites ``z`` (funsor's variable
        elimination, as numpyro's HMC does for discrete latent sites)."""
        from numpyro.contrib.funsor import log_density

        return log_density(self._enumerate(model), self.args, self.kwargs, {})[0]

    def to_constrained(self, flat):
        """Flat unconstrained vector -> dict of constrained latent values."""
        trace = self._unconstrained_trace(flat)
        return {n: trace[n]["value"] for n in self.latents}

    def to_unconstrained(self, values: dict):
        """Dict of constrained latent values -> flat unconstrained vector (each site's inverse
        bijection taken from its support in a run of the model at these values)."""
        flat, _ = ravel_pytree(self._unconstrained_values(values))
        return flat

    def _unconstrained_values(self, values: dict) -> dict:
        values = {n: jnp.asarray(values[n]) for n in self.latents}
        trace = self._trace(values)
        return {
            n: values[n]
            if s.is_diffusion_prior
            else biject_to(trace[n]["fn"].support).inv(values[n])
            for n, s in self.latents.items()
        }

    def start_with(self, flat, given: dict):
        """The unconstrained point whose constrained values are ``given`` at the given sites
        and follow ``flat`` at the others (numpyro's ``init_to_value`` on top of a random
        start): the others keep their *unconstrained* values, so a site whose support moves
        with a given one (``b ~ Uniform(a, a + 2)`` with ``a`` given) stays inside it.

        A given site's unconstrained value depends on its parents' constrained values, which
        may depend on other given sites: one pass per given site settles every chain of such
        dependencies (each pass fixes at least one more link)."""
        unconstrained = self.unravel(flat)
        for _ in range(len(given)):
            values = self.to_constrained(ravel_pytree(unconstrained)[0])
            values.update({n: jnp.asarray(v, values[n].dtype) for n, v in given.items()})
            pulled_back = self._unconstrained_values(values)
            unconstrained.update({n: pulled_back[n] for n in given})
        return ravel_pytree(unconstrained)[0]

    def _trace(self, constrained: dict):
        substituted = handlers.substitute(
            handlers.seed(self.traceable_model, rng_seed=0), data=constrained
        )
        return handlers.trace(substituted).get_trace(*self.args, **self.kwargs)

    # -- densities -----------------------------------------------------------------------
    def log_prior_and_likelihood(self, flat):
        """``(log prior on unconstrained space incl. Jacobians, log likelihood incl. factors)``.

        With enumerated discrete sites ``z`` the split is of the marginal density,
        ``log p(theta) = log sum_z p(theta, z)`` (observed sites and factors masked out) and
        ``log p(y | theta) = log sum_z p(theta, z, y) - log p(theta)``.
        """
        if self.enumerated:
            model = self._constrained_model(flat)
            log_joint = self._marginal_log_density(model)
            log_prior = self._marginal_log_density(_DropLikelihood(model))
            return log_prior + self._masked_out_reference(flat), log_joint - log_prior
        trace = self._unconstrained_trace(flat)
        log_prior = self._masked_out_reference(flat, trace)
        log_lik = 0.0
        for name, site in trace.items():
            if site["type"] != "sample":
                continue
            term = _site_log_prob(site)
            if site["is_observed"] and not name.endswith(JACOBIAN_SUFFIX):
                log_lik = log_lik + term
            else:
                log_prior = log_prior + term
        return log_prior, log_lik

    def _masked_out_reference(self, flat, trace=None):
        """A standard normal density for the entries of an ``obs_mask=`` imputation site that
        no one uses.

        numpyro's ``sample(name, fn, obs=y, obs_mask=m)`` samples ``<name>_unobserved`` of the
        full shape under ``mask(~m)``: its entries at *observed* positions have no density and
        feed nothing (``<name>`` takes the data there), so they are flat directions of the
        posterior. NUTS never turns back along them (every draw at the maximum tree depth)
        and their R-hat / ESS fill the diagnostics. Giving them ``N(0, 1)`` on the
        unconstrained scale makes the posterior proper without changing the law of anything
        the model uses, nor its evidence (the added density integrates to one).
        ``trace`` is a trace of the model at ``flat`` (taken here when not given: the masks
        are data, so enumerated sites may take any value in it).
        """
        if not self.imputed:
            return 0.0
        if trace is None:
            trace = self._unconstrained_trace(flat)
        unconstrained = self.unravel(flat)
        total = 0.0
        for name in self.imputed:
            u = unconstrained[name]  # the value's shape (an elementwise bijection)
            reference = -0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi)
            total = total + jnp.sum(jnp.where(_unused_entries(trace[name]), reference, 0.0))
        return total

    def masked_out_entries(self):
        """Boolean flat vector: the entries of ``obs_mask=`` imputation sites that no one uses
        (their density is the ``N(0, 1)`` reference of :meth:`_masked_out_reference`, not the
        model's), or ``None`` when the model has none. A sampler that starts from exact prior
        draws (tempered SMC) draws these from ``N(0, 1)``: ancestral sampling draws them from
        the model, which is not the density it tempers."""
        if not self.imputed:
            return None
        trace = self._unconstrained_trace(jnp.zeros(self.dim))  # masks are data: any point
        entries = {
            name: np.broadcast_to(
                _unused_entries(trace[name]) if name in self.imputed else False,
                site.unconstrained_shape,
            ).astype(np.float32)
            for name, site in self.latents.items()
        }
        return np.asarray(ravel_pytree(entries)[0]) > 0.5

    def logdensity(self, flat):
        """Log posterior density (up to a constant) of the flat unconstrained vector, with any
        discrete sites summed out."""
        if self.enumerated:
            marginal = self._marginal_log_density(self._constrained_model(flat))
            return marginal + self._masked_out_reference(flat)
        log_prior, log_lik = self.log_prior_and_likelihood(flat)
        return log_prior + log_lik

    def log_prior(self, flat):
        return self.log_prior_and_likelihood(flat)[0]

    def log_likelihood(self, flat):
        return self.log_prior_and_likelihood(flat)[1]

    # -- draws -----------------------------------------------------------------------------
    def constrained_draws(self, flat, key=None, recover_discrete: bool = True):
        """Latent and deterministic site values for one flat unconstrained vector.

        Enumerated discrete sites are drawn from their conditional posterior given the
        continuous ones and the data (numpyro's ``infer_discrete``, forward-filter
        backward-sample by variable elimination), with ``key``; deterministic sites see those
        draws. With ``recover_discrete=False`` only the continuous sites are returned (the
        deterministic ones might depend on the discrete draws)."""
        model = self._constrained_model(flat)
        sites = tuple(self.latents)
        if self.enumerated and recover_discrete:
            from numpyro.contrib.funsor import config_enumerate, infer_discrete

            model = infer_discrete(
                config_enumerate(model),
                first_available_dim=-self.max_plate_nesting - 1,
                temperature=1,
                rng_key=key,
            )
            sites = (*sites, *self.enumerated)
        if recover_discrete or not self.enumerated:
            sites = (*sites, *self.deterministic)
        trace = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(
            *self.args, **self.kwargs
        )
        return {n: trace[n]["value"] for n in sites}

    def draws_from(self, positions, with_log_likelihood: bool = True, key=None):
        """Site values (latent, enumerated and deterministic) and pointwise log-likelihoods of
        flat unconstrained draws shaped ``(chains, draws, dim)``, each shaped
        ``(chains, draws, ...)``. ``key`` (default ``PRNGKey(0)``) seeds the draws of
        enumerated discrete sites."""
        chains, draws = positions.shape[:2]
        flat = jnp.asarray(np.reshape(positions, (chains * draws, -1)))
        keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, len(flat))
        values = self._site_draws(flat, keys)

        def shaped(v):
            return np.asarray(v).reshape(chains, draws, *np.shape(v)[1:])

        samples = {k: shaped(v) for k, v in values.items()}
        pointwise = {}
        if with_log_likelihood and self.observed:
            latent = {k: values[k] for k in self.latents}
            pointwise = {
                k: shaped(v) for k, v in self.batched_pointwise_log_likelihood(latent).items()
            }
        return samples, pointwise

    def _site_draws(self, flat, keys) -> dict:
        """:meth:`batched_draws`, or, with a warning, the continuous sites alone where the
        discrete sites are enumerated inside ``scan`` (numpyro's ``infer_discrete`` does not
        support it)."""
        if not self.enumerated_in_scan:
            return self.batched_draws(flat, keys)
        dropped = [*self.enumerated, *self.deterministic]
        warnings.warn(
            f"the discrete site(s) {list(self.enumerated)} are summed out of the density but "
            f"not drawn (they are enumerated inside scan, which numpyro's infer_discrete does "
            f"not support); {dropped} are left out of the draws",
            stacklevel=3,
        )
        return self._batched_continuous_draws(flat, keys)

    @cached_property
    def batched_draws(self) -> Callable:
        """Jitted ``constrained_draws`` over a leading batch axis (compiled once per model).

        With enumerated discrete sites the draws run one after another (``lax.map``): XLA
        compiles the vmapped ``infer_discrete`` program 1.5x slower (a 100-point mixture:
        4.3 s against 2.9 s on one core, 600 draws), and the sequential run costs 10 ms against
        4 ms."""
        if self.enumerated:
            draw = self.constrained_draws
            return jax.jit(lambda flat, keys: jax.lax.map(lambda fk: draw(*fk), (flat, keys)))
        return jax.jit(jax.vmap(self.constrained_draws))

    @cached_property
    def _batched_continuous_draws(self) -> Callable:
        return jax.jit(jax.vmap(partial(self.constrained_draws, recover_discrete=False)))

    @cached_property
    def batched_pointwise_log_likelihood(self) -> Callable:
        """Jitted :meth:`pointwise_log_likelihood` (compiled once per model)."""
        return jax.jit(self.pointwise_log_likelihood)

    def first_finite(self, candidates):
        """The first row of ``candidates`` (``(attempts, dim)``) where the log density and its
        gradient are finite, and whether there is one (pure: traced into callers' programs)."""
        value, grad = jax.vmap(jax.value_and_grad(self.logdensity))(candidates)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad), axis=-1)
        index = jnp.argmax(ok)
        return candidates[index], ok[index]

    @cached_property
    def _first_finite_point(self) -> Callable:
        """Jitted :meth:`first_finite` over a leading axis of rows of candidates."""
        return jax.jit(jax.vmap(self.first_finite))

    def pointwise_log_likelihood(self, samples: dict) -> dict:
        """Per-observation log-likelihood of each observed site (numpyro's ``log_likelihood``).

        ``samples`` maps latent names to arrays with one leading batch axis. With enumerated
        discrete sites it is the marginal ``log p(y_i | theta)`` (:meth:`_marginal_pointwise`).
        """
        if not self.observed:
            return {}
        latent = {n: samples[n] for n in self.latents}
        if self.enumerated:
            return jax.vmap(self._marginal_pointwise)(latent)
        # seeded with the key the log density uses: a sample site hidden by ``block`` draws
        model = handlers.seed(self.traceable_model, rng_seed=0)
        lls = _numpyro_log_likelihood(model, latent, *self.args, **self.kwargs)
        return {n: v for n, v in lls.items() if n in self.observed}

    def _marginal_pointwise(self, latent: dict) -> dict:
        """``log p(y_i | theta) = log sum_z p(z | theta) p(y_i | z, theta)`` per element of each
        observed site, the discrete sites ``z`` summed out.

        In the enumerated trace every discrete site's log-probability carries its own
        enumeration dimension and the plate dimensions it lives in; adding them to the observed
        site's and taking ``logsumexp`` over the enumeration dimensions, element by element of
        the plates, sums out the ``z`` that ``y_i`` depends on, while every other ``z``'s
        conditional sums to one. This is the per-observation marginal only where each discrete
        site lives in every plate of the observed site's (a mixture's assignments, local to the
        data); a site for which that fails (a discrete site in a plate the observation is not
        in) gets no pointwise log-likelihood, with a warning.
        """
        if self.enumerated_in_scan:
            warnings.warn(
                f"no pointwise log-likelihood for a model whose discrete site(s) "
                f"{list(self.enumerated)} are enumerated inside scan (a Markov chain needs the "
                "forward algorithm per observation); the log_likelihood group is left empty",
                stacklevel=2,
            )
            return {}
        model = handlers.substitute(self.traceable_model, data=latent)
        enumerated = handlers.trace(handlers.seed(self._enumerate(model), rng_seed=0)).get_trace(
            *self.args, **self.kwargs
        )
        plain = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(
            *self.args, **self.kwargs
        )
        # unscaled, as numpyro's log_likelihood of a model without discrete sites: a scale
        # handler weights the sites in the joint density, not the pointwise likelihood
        pointwise = {}
        for name in self.observed:
            depends, shared = self._discrete_dependencies(enumerated, name)
            if shared:
                warnings.warn(
                    f"observed site '{name}': no pointwise log-likelihood: its elements depend "
                    f"on the discrete site(s) {shared}, each shared by several of them (not in "
                    f"every plate of '{name}'), so they are not independent given the "
                    "continuous parameters; it is left out of the log_likelihood group",
                    stacklevel=2,
                )
                continue
            expected = jnp.shape(_unscaled_log_prob(plain[name]))
            # the discrete sites the site does not depend on sum to one: leave them out (one in
            # another plate would not broadcast against it)
            total = _unscaled_log_prob(enumerated[name])
            for z in depends:
                total = total + _unscaled_log_prob(enumerated[z])
            enum_dims = total.ndim - self.max_plate_nesting
            if enum_dims > 0:
                total = jax.nn.logsumexp(total, axis=tuple(range(enum_dims)))
            extra = total.ndim - len(expected)
            if extra > 0 and all(size == 1 for size in total.shape[:extra]):
                total = jnp.reshape(total, total.shape[extra:])
            try:
                fits = np.broadcast_shapes(total.shape, expected) == tuple(expected)
            except ValueError:
                fits = False
            if not fits:
                warnings.warn(
                    f"observed site '{name}': no pointwise log-likelihood with the discrete "
                    f"site(s) {list(self.enumerated)} summed out (one lives in a plate that "
                    f"'{name}' is not in); it is left out of the log_likelihood group",
                    stacklevel=2,
                )
                continue
            pointwise[name] = jnp.broadcast_to(total, expected)
        return pointwise

    def _discrete_dependencies(self, enumerated, name: str) -> tuple[list[str], list[str]]:
        """The discrete sites that the observed site ``name`` depends on, directly or through
        other discrete sites, and those of them that are not in every plate of ``name``'s (a
        changepoint ``tau`` shared by all the time steps): with one, ``sum_i log p(y_i |
        theta)`` is not ``log p(y | theta)``. In the enumerated trace each discrete site's
        value varies along its own enumeration axis, and a log-density depends on the site
        where it varies along that axis too."""

        def varies(shape, axis):
            return axis is not None and len(shape) >= -axis and shape[axis] > 1

        own_axis = {}
        for z in self.enumerated:
            shape = jnp.shape(enumerated[z]["value"])
            axes = [a for a in range(-len(shape), -self.max_plate_nesting) if shape[a] > 1]
            own_axis[z] = axes[0] if axes else None
        plates = {
            n: {frame.name for frame in enumerated[n]["cond_indep_stack"]}
            for n in (*self.enumerated, name)
        }
        frontier = [jnp.shape(_unscaled_log_prob(enumerated[name]))]
        depends: set[str] = set()
        while frontier:
            shape = frontier.pop()
            for z in self.enumerated:
                if z not in depends and varies(shape, own_axis[z]):
                    depends.add(z)
                    frontier.append(jnp.shape(_unscaled_log_prob(enumerated[z])))
        shared = sorted(z for z in depends if not plates[name] <= plates[z])
        return sorted(depends), shared

    def initial_candidates(self, key, num: int):
        """``(num, INIT_ATTEMPTS, dim)`` Stan-style candidate starts, uniform on ``(-2, 2)`` on
        unconstrained space (numpyro's ``init_to_uniform``)."""
        return rng.uniform(
            key, (num, INIT_ATTEMPTS, self.dim), minval=-INIT_RADIUS, maxval=INIT_RADIUS
        )

    def initial_positions(self, key, num: int):
        """``num`` Stan-style initial points, each redrawn until density and gradient are finite.

        Draws :meth:`initial_candidates` and keeps each row's :meth:`first_finite` one.
        Raises ``ValueError`` naming the offending sites when none is.
        """
        candidates = self.initial_candidates(key, num)
        positions, found = self._first_finite_point(candidates)
        self.check_initial_points(candidates, found)
        return positions

    def check_initial_points(self, candidates, found) -> None:
        """Raise ``ValueError`` (naming the sites whose density is not finite) unless every row
        of ``candidates`` had a finite point (``found``, from :meth:`first_finite`)."""
        found = np.asarray(found)
        if not found.all():
            raise ValueError(
                f"the log density is not finite at any of {INIT_ATTEMPTS} initial points drawn "
                f"uniformly in (-{INIT_RADIUS}, {INIT_RADIUS}) on unconstrained space"
                f"{self._diagnose_nonfinite(candidates[int(np.argmin(found)), 0])}; check the "
                "model's data and parameter supports"
            )

    def _diagnose_nonfinite(self, flat) -> str:
        constrained = self.to_constrained(flat)
        trace = self._trace(constrained)
        bad = [
            name
            for name, site in trace.items()
            if site["type"] == "sample" and not np.isfinite(np.asarray(_site_log_prob(site)))
        ]
        return f" (non-finite log density at site(s) {', '.join(map(repr, bad))})" if bad else ""


def _log_prob(site):
    """The site's elementwise log-probability, scaled by its ``scale`` handler."""
    log_prob = site["fn"].log_prob(site["value"])
    if site.get("scale") is not None:
        log_prob = site["scale"] * log_prob
    return log_prob


class _DropLikelihood(handlers.Messenger):
    """Mask out observed sites and user ``factor`` terms (not the Jacobian factors): the
    model's marginal prior."""

    def process_message(self, msg):
        if (
            msg["type"] == "sample"
            and msg["is_observed"]
            and not msg["name"].endswith(JACOBIAN_SUFFIX)
        ):
            msg["fn"] = msg["fn"].mask(False)


def _unscaled_log_prob(site):
    return site["fn"].log_prob(site["value"])


def _site_log_prob(site):
    return jnp.sum(_log_prob(site))


def _is_identity(transform) -> bool:
    """``biject_to(real)`` and its ``independent`` wrappers: no Jacobian term."""
    while hasattr(transform, "base_transform"):
        transform = transform.base_transform
    return isinstance(transform, IdentityTransform)


def _is_diffusion_prior(fn) -> bool:
    return getattr(fn, "is_diffusion_prior", False)


def _wraps_diffusion_prior(fn) -> bool:
    """A ``DiffusionPrior`` expanded by a plate, ``sample_shape`` or ``.expand`` (or masked):
    not the plain prior the diffusion-time samplers recognise."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
        if _is_diffusion_prior(fn):
            return True
    return False


def trace_model(model: Callable, args: tuple, kwargs: dict, seed: int = 0):
    """Run the model once under numpyro's ``trace`` handler, for its site structure.

    Latent continuous sites take Stan-style values (uniform in (-2, 2) on unconstrained space,
    like numpyro's ``init_to_uniform``), so improper priors (``ImproperUniform``) trace too;
    ``DiffusionPrior`` sites are not simulated (their sampler is expensive): zeros of the
    right shape stand in. Exceptions raised by the model are re-raised saying so.
    """
    if not callable(model):
        raise TypeError(f"model must be a callable (a Python function), got {type(model).__name__}")
    try:
        with handlers.trace() as tr, _TraceValues(seed), handlers.seed(rng_seed=seed):
            model(*args, **kwargs)
    except (TypeError, ValueError) as err:
        message = f"the model raised while being traced: {err}"
        if isinstance(err, jax.errors.JAXTypeError):  # built from a tracer, not a message
            raise TypeError(
                f"{message}\n(the model runs on JAX tracers: use jnp rather than NumPy, and "
                "jnp.where / lax.cond rather than Python if, on values computed from samples "
                "or a scan's counter)"
            ) from err
        raise type(err)(message) from err
    except Exception as err:  # noqa: BLE001 - any user error, re-raised with context
        raise RuntimeError(f"the model raised while being traced: {err!r}") from err
    return tr


class _TraceValues(handlers.Messenger):
    """Values for latent sites while tracing: zeros for ``DiffusionPrior`` draws, a uniform
    point in (-2, 2) on unconstrained space for continuous sites with a bijection, and an
    ordinary draw for the rest (discrete sites, which ``compile_model`` then refuses)."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or msg.get("value") is not None:
            return
        fn = msg["fn"]
        shape = tuple(msg["kwargs"].get("sample_shape", ())) + tuple(fn.shape())
        if _is_diffusion_prior(fn):
            msg["value"] = jnp.zeros(shape)
            return
        if getattr(fn.support, "is_discrete", False):
            return
        try:
            transform = biject_to(fn.support)
        except NotImplementedError:
            return
        unconstrained = self.rng.uniform(-INIT_RADIUS, INIT_RADIUS, transform.inverse_shape(shape))
        msg["value"] = transform(jnp.asarray(unconstrained, dtype=jnp.result_type(float)))


def compile_model(
    model: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    require_continuous: bool = True,
) -> CompiledModel:
    """Trace ``model(*args, **kwargs)`` and build its :class:`CompiledModel`.

    Discrete latent sites with a finite support (``Bernoulli``, ``Categorical``, ...) are
    *enumerated*: the log density sums them out by variable elimination (``funsor``, as
    numpyro's HMC does; plates must carry every batch dimension) and the draws recover them
    from their conditional posterior.

    Raises ``ValueError`` / ``TypeError`` naming the site for: discrete latent sites without a
    finite support (when ``require_continuous``), unobserved ``Delta`` sites, supports
    without a bijection to unconstrained space, observed values whose shape does not match
    their distribution, non-finite observed values, and a model without continuous latent
    sites.
    """
    kwargs = dict(kwargs or {})
    trace = trace_model(model, args, kwargs)
    computed = _observed_from_latents(model, args, kwargs, trace)
    latents: dict[str, LatentSite] = {}
    enumerated: list[str] = []
    observed: dict[str, np.ndarray] = {}
    deterministic: list[str] = []
    factors: list[str] = []
    site_dims: dict[str, tuple[str | None, ...]] = {}
    for name, site in trace.items():
        if site["type"] == "plate":
            _check_full_plate(name, site)
            continue
        if site["type"] == "deterministic":
            deterministic.append(name)
            site_dims[name] = _plate_dims(site)
            continue
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        site_dims[name] = _plate_dims(site)
        if site["is_observed"]:
            if site.get("infer", {}).get("is_auxiliary"):
                factors.append(name)
                continue
            observed[name] = _check_observed(
                name, fn, site["value"], check_finite=name not in computed
            )
            continue
        if _wraps_diffusion_prior(fn):
            raise ValueError(
                f"latent site '{name}': a DiffusionPrior must be sampled as it is, outside "
                f"plates and without sample_shape (here it is a {type(fn).__name__} with "
                f"batch shape {tuple(fn.batch_shape)}); one site is one draw of the prior's "
                "shape"
            )
        if require_continuous and _is_enumerable(fn):
            enumerated.append(name)
            continue
        latents[name] = _latent_site(name, fn, site["value"], require_continuous)
    if not latents:
        raise ValueError(
            "the model has no continuous latent sample sites: nothing to infer "
            + (
                f"(its discrete sites {enumerated} are summed out)"
                if enumerated
                else "(every site is observed)"
            )
        )
    unconstrained_example = {n: jnp.zeros(s.unconstrained_shape) for n, s in latents.items()}
    flat, unravel = ravel_pytree(unconstrained_example)
    imputed = _imputation_sites(trace, latents)
    return CompiledModel(
        model=model,
        args=args,
        kwargs=kwargs,
        latents=latents,
        observed=observed,
        deterministic=deterministic,
        factors=factors,
        dim=int(flat.shape[0]),
        unravel=unravel,
        site_dims=site_dims,
        enumerated=tuple(enumerated),
        imputed=imputed,
        masked_latents=_masked_latents(trace, latents, imputed),
        scaled_latents=tuple(n for n in latents if not _unit_scale(trace[n].get("scale"))),
        computed_observations=tuple(sorted(computed & observed.keys())),
        enumerated_in_scan=any("_scan_current_index" in trace[n]["infer"] for n in enumerated),
        max_plate_nesting=max(
            (-f.dim for site in trace.values() for f in site.get("cond_indep_stack", []) if f.dim),
            default=0,
        ),
    )


def _unit_scale(scale) -> bool:
    """No ``scale`` handler, or one of 1 everywhere (a traced scale counts as not 1)."""
    if scale is None:
        return True
    try:
        return bool(np.all(np.asarray(scale) == 1))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False


def _unused_entries(site):
    """Of an ``obs_mask=`` imputation site ``<name>_unobserved``: where the data is observed
    (its mask ``~obs_mask`` is False), broadcast over its event axes."""
    observed = ~jnp.broadcast_to(site["fn"]._mask, site["fn"].batch_shape)
    return jnp.reshape(observed, observed.shape + (1,) * len(site["fn"].event_shape))


def _masked_latents(trace, latents, imputed) -> tuple[str, ...]:
    """Latent sites (not ``obs_mask=`` imputation sites) whose density a mask hides in part:
    ``handlers.mask`` around a latent, ``fn.mask(m)``."""
    return tuple(
        name
        for name in latents
        if name not in imputed
        and not observation_mask(trace[name]["fn"], np.shape(trace[name]["value"])).all()
    )


def _imputation_sites(trace, latents) -> tuple[str, ...]:
    """The ``<name>_unobserved`` sites numpyro's ``obs_mask=`` builds: continuous latents
    with an array mask (``fn.mask(~obs_mask)``) and an elementwise bijection, next to an observed
    ``<name>_observed`` and a deterministic ``<name>``
    (``numpyro.primitives._masked_observe``), outside ``scan``."""
    found = []
    for name in latents:
        base = name.removesuffix("_unobserved")
        site = trace[name]
        if (
            base != name
            and trace.get(base + "_observed", {}).get("is_observed")
            and trace.get(base, {}).get("type") == "deterministic"
            and isinstance(site["fn"], dist.MaskedDistribution)
            and not isinstance(site["fn"]._mask, bool)
            and "_scan_current_index" not in site["infer"]
            and tuple(latents[name].unconstrained_shape) == tuple(jnp.shape(site["value"]))
        ):
            found.append(name)
    return tuple(found)


def _is_enumerable(fn) -> bool:
    """A discrete distribution whose finite support numpyro can enumerate."""
    discrete = getattr(fn.support, "is_discrete", False) or getattr(fn, "is_discrete", False)
    return bool(discrete and getattr(fn, "has_enumerate_support", False))


def _observed_from_latents(model, args, kwargs, trace) -> set[str]:
    """Observed sites whose ``obs=`` value the model computes from latent values.

    Such values (residuals of a recursion, say) are not data: they may be non-finite at an
    arbitrary point, so only the others are checked for NaN / inf. Found exactly by tracing
    ``latent values -> observed values`` to a jaxpr and following its data dependencies.
    """
    latent = {
        n: s["value"] for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
    }
    observed = [
        n
        for n, s in trace.items()
        if s["type"] == "sample" and s["is_observed"] and not s.get("infer", {}).get("is_auxiliary")
    ]
    if not latent or not observed:
        return set()

    def observed_values(values):
        substituted = handlers.substitute(handlers.seed(model, rng_seed=0), data=values)
        tr = handlers.trace(substituted).get_trace(*args, **kwargs)
        return [jnp.asarray(tr[n]["value"]) for n in observed]

    try:
        closed = jax.make_jaxpr(observed_values)(latent)
    except Exception:  # noqa: BLE001 - fall back to checking every observed value
        return set()
    jaxpr = closed.jaxpr
    depends = set(map(id, jaxpr.invars))
    for eqn in jaxpr.eqns:
        if any(id(v) in depends for v in eqn.invars if not isinstance(v, jax_core.Literal)):
            depends.update(map(id, eqn.outvars))
    return {n for n, v in zip(observed, jaxpr.outvars, strict=True) if id(v) in depends}


def _latent_site(name, fn, value, require_continuous) -> LatentSite:
    support = fn.support
    if require_continuous and (
        getattr(support, "is_discrete", False) or getattr(fn, "is_discrete", False)
    ):
        raise ValueError(
            f"latent site '{name}' has a discrete distribution ({type(fn).__name__}) without a "
            "finite support to enumerate; gradient-based kernels need continuous latent "
            "sites: marginalise it out by hand, bound it (e.g. a Categorical over its "
            "plausible values, which is summed out), or observe it with obs=..."
        )
    if _is_diffusion_prior(fn):
        shape = tuple(jnp.shape(value))
        return LatentSite(name, shape, shape, constraints_identity(), is_diffusion_prior=True)
    if distribution_name(fn) == "Delta":
        raise ValueError(
            f"latent site '{name}' is a Delta (a point mass) that is not observed: it has no "
            f"density to sample from; record a computed value with ppl.deterministic('{name}', "
            "value), or observe the site with obs=..."
        )
    try:
        transform = biject_to(support)
    except NotImplementedError as err:
        raise ValueError(
            f"latent site '{name}' has support {support!r}, for which there is no bijection to "
            "unconstrained space; reparametrise it, or give it a distribution with a "
            "continuous support that numpyro's biject_to knows"
        ) from err
    shape = tuple(jnp.shape(value))
    unconstrained_shape = tuple(transform.inverse_shape(shape))
    return LatentSite(name, shape, unconstrained_shape, transform)


def constraints_identity():
    return biject_to(constraints.real)


def distribution_name(fn) -> str:
    """The name a user wrote for ``fn``: numpyro's wrappers from plates, ``to_event`` and
    masks (``ExpandedDistribution``, ``Independent``, ``MaskedDistribution``) are looked
    through and the parametrisation classes (``BernoulliProbs``) named by their factory, so a
    ``Bernoulli`` in a plate is named ``Bernoulli``."""
    while isinstance(fn, dist.ExpandedDistribution | dist.Independent | dist.MaskedDistribution):
        fn = fn.base_dist
    name = type(fn).__name__
    for suffix in ("Probs", "Logits"):  # BernoulliProbs is what dist.Bernoulli(p) builds
        if name.endswith(suffix) and hasattr(dist, name.removesuffix(suffix)):
            return name.removesuffix(suffix)
    return name


def fixed_support(constraint):
    """``constraint`` if it is one of numpyro's parameter-free supports (``positive``,
    ``nonnegative_integer``, ``simplex``, ..., a ``Categorical``'s ``{0, ..., K - 1}``,
    possibly made an event by ``to_event``), else
    ``None``: a support that depends on parameters (``Uniform(0, theta)``) cannot be checked
    from the traced example values."""
    base = constraint
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if isinstance(base, constraints._SingletonConstraint):
        return constraint
    # Categorical's {0, ..., K - 1}: bounds that are plain ints come from shapes or literals
    # (a bound from a parameter, Binomial's total_count, is an array)
    bounds = (getattr(base, "lower_bound", None), getattr(base, "upper_bound", None))
    if isinstance(base, constraints._IntegerInterval) and all(type(b) is int for b in bounds):
        return constraint
    return None


def values_outside(constraint, value, mask=None) -> int:
    """How many elements of ``value`` lie outside a parameter-free ``constraint`` (0 when it
    depends on parameters); entries where ``mask`` is False are not counted."""
    if fixed_support(constraint) is None:
        return 0
    inside = np.asarray(constraint.check(jnp.asarray(value)))
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.ndim > inside.ndim:  # an elementwise mask against an event constraint
            mask = mask.all(axis=tuple(range(inside.ndim - mask.ndim, 0)))
        inside = inside | ~np.broadcast_to(mask, inside.shape)
    return int(inside.size - np.count_nonzero(inside))


def _check_observed(name, fn, value, check_finite: bool = True) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(
            f"observed site '{name}': obs has dtype {array.dtype}, expected numbers (a missing "
            "value given as None? use NaN with obs_mask=, or drop it)"
        )
    expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
    event = tuple(fn.event_shape)
    try:
        broadcast = np.broadcast_shapes(array.shape, expected)
    except ValueError:
        broadcast = None
    wrong_event = event and array.shape[len(array.shape) - len(event) :] != event
    if broadcast is None or wrong_event or (expected and broadcast != expected):
        raise ValueError(
            f"observed site '{name}': obs has shape {array.shape}, but its distribution "
            f"{distribution_name(fn)} has batch_shape + event_shape {expected}"
        )
    if check_finite and np.issubdtype(array.dtype, np.number):
        mask = observation_mask(fn, broadcast)
        usable = np.isfinite(array) | ~mask
        if not usable.all():
            raise ValueError(
                f"observed site '{name}' contains {int(usable.size - usable.sum())} non-finite "
                "value(s) (NaN or inf) where it is not masked; remove or impute them, or mask "
                "them out (obs_mask=, or numpyro.handlers.mask)"
            )
        outside = values_outside(fn.support, array, mask)
        if outside:
            raise ValueError(
                f"observed site '{name}' has {outside} value(s) outside the support of its "
                f"{distribution_name(fn)} ({fn.support}): their likelihood is zero everywhere"
            )
    return array


def observation_mask(fn, shape) -> np.ndarray:
    """Which entries of a value of ``shape`` enter ``fn``'s log density: ``False`` where a mask
    at any level of numpyro's wrappers hides them (``obs_mask=``, ``handlers.mask``,
    ``.mask(m)`` inside ``to_event`` or a plate's expansion), each mask aligned with the
    batch shape of its level."""
    usable = np.ones(shape, bool)
    while True:
        if isinstance(fn, dist.MaskedDistribution):
            mask = np.asarray(fn._mask, bool)
            mask = np.reshape(mask, np.shape(mask) + (1,) * len(fn.event_shape))
            usable = usable & np.broadcast_to(mask, shape)
        if not isinstance(
            fn, dist.ExpandedDistribution | dist.Independent | dist.MaskedDistribution
        ):
            return usable
        fn = fn.base_dist


def _check_full_plate(name, site) -> None:
    """Refuse a subsampled plate: MCMC and SMC need the full-data log density (a random
    subsample per evaluation is a noisy density, which the kernels' accept steps and the
    evidence estimates do not allow)."""
    size, subsample_size = site["args"][:2]
    if subsample_size is not None and subsample_size != size:
        raise ValueError(
            f"plate '{name}' subsamples {subsample_size} of {size} elements (subsample_size=): "
            "MCMC and SMC need the full-data log density; remove subsample_size (subsampling "
            "is for stochastic variational inference)"
        )


def _plate_dims(site) -> tuple[str | None, ...]:
    """Names for every axis of the site's value: a plate's name at the batch axis of its
    ``dim`` (``plate("groups", 4, dim=-2)`` names the second batch axis from the right,
    whatever is right of it), ``None`` for the other axes and the event axes (which get
    ``{site}_dim_{i}``). A deterministic site declares no event axes: its batch axes are
    taken to be its plates' (the leading ones, as ArviZ does: ``exp`` of a
    ``MultivariateNormal`` in a plate of 6 has shape ``(6, 2)``, twice a ``Dirichlet(3)`` in a
    plate of 3 ``(3, 3)``: one trailing event axis) where the sizes fit, else the fewest
    trailing axes at which every plate's size fits, and no plate names where none does."""
    shape = np.shape(site["value"])
    frames = [f for f in site.get("cond_indep_stack", []) if f.dim is not None]
    if site["type"] == "sample":
        event_ndims = [len(getattr(site.get("fn"), "event_shape", ()))]
    else:
        nesting = max((-f.dim for f in frames), default=0)
        leading = [len(shape) - nesting] if len(shape) >= nesting else []
        event_ndims = leading + list(range(len(shape) + 1))
    for event_ndim in event_ndims:
        batch_ndim = len(shape) - event_ndim
        inside = [f for f in frames if -batch_ndim <= f.dim < 0]
        if site["type"] == "sample" or all(shape[batch_ndim + f.dim] == f.size for f in inside):
            names: list[str | None] = [None] * len(shape)
            for frame in inside:
                names[batch_ndim + frame.dim] = frame.name
            return tuple(names)
    return (None,) * len(shape)


def data_fingerprint(args, kwargs):
    """A hashable summary of the model's data (array contents by digest), or ``None``."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    parts = []
    for leaf in leaves:
        part = _leaf_fingerprint(leaf)
        if part is None:
            return None
        parts.append(part)
    return treedef, tuple(parts)


def _leaf_fingerprint(leaf):
    """An array by shape, dtype and digest of its contents; a hashable value as itself;
    ``None`` for anything else."""
    if isinstance(leaf, (np.ndarray, jax.Array, np.generic)):
        array = np.asarray(leaf)
        if array.dtype.hasobject:
            return None  # references, not contents (a list with None in it)
        digest = hashlib.sha1(np.ascontiguousarray(array).view(np.uint8)).hexdigest()
        if isinstance(leaf, np.ndarray):
            _note_array_contents(leaf, digest)
        return array.shape, array.dtype.str, digest
    try:
        hash(leaf)
    except TypeError:
        return None
    if isinstance(leaf, (types.FunctionType, type, types.ModuleType)) or _is_library_object(leaf):
        return _Ref(leaf)
    return type(leaf), leaf


# id -> (weak reference, digest) of every numpy array fingerprinted so far
_ARRAY_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def _note_array_contents(array: np.ndarray, digest: str) -> None:
    """Clear JAX's caches when a numpy array seen before was changed in place.

    A jitted program that reads a numpy array as a constant leaves JAX (0.10) holding its
    device copy, keyed by the array object: after ``A[:] = new`` every later program, even a
    freshly traced one, and even eager ``jnp.sum(A)``, uses the old contents until
    ``jax.clear_caches()``. The fingerprint sees the new contents, so it is the place to notice.
    """
    try:
        ref = weakref.ref(array)
    except TypeError:  # a view of a non-weakref-able base
        return
    previous = _ARRAY_DIGESTS.get(id(array))
    if previous is not None and previous[0]() is array and previous[1] != digest:
        jax.clear_caches()
    _ARRAY_DIGESTS[id(array)] = (ref, digest)
    if len(_ARRAY_DIGESTS) > 4096:  # forget the arrays that no longer exist
        for key in [k for k, (r, _) in _ARRAY_DIGESTS.items() if r() is None]:
            del _ARRAY_DIGESTS[key]


class _Ref:
    """An object taken by identity in a fingerprint (a function, a module, a class, a library
    object); :func:`stable_digest` writes it by its qualified name, which outlives the
    process."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Ref) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)

    @property
    def name(self) -> str:
        """The qualified name of the function, module or class, or of the object's class,
        with a digest of the object's arrays when it is a pytree (a numpyro distribution)."""
        if isinstance(self.obj, (type, types.FunctionType, types.ModuleType)):
            obj, contents = self.obj, ""
        else:
            obj = type(self.obj)
            try:
                leaves = [leaf for leaf in jax.tree.leaves(self.obj) if leaf is not self.obj]
            except Exception:  # noqa: BLE001 - an object that cannot be flattened: its name
                leaves = []
            contents = re.sub(r" at 0x[0-9a-f]+", "", str([_leaf_fingerprint(x) for x in leaves]))
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}{contents}"


def _is_library_object(value) -> bool:
    """An instance of a class of jax, numpyro, this library, ... (taken by identity; numbers
    and strings, instances of builtins, by value)."""
    root = (type(value).__module__ or "").split(".")[0]
    return root in LIBRARY_MODULES and root != "builtins"


def stable_digest(fn, args=(), kwargs=None) -> str | None:
    """A digest of :func:`program_fingerprint` that is the same in every process: functions,
    classes, modules and library objects by qualified name, arrays by content, numbers and
    strings by value. Checkpoints store it, so that a run is not resumed after the model's
    data, or a value it reads, changed. ``None`` when the fingerprint cannot be taken."""
    fingerprint = program_fingerprint(fn, args, kwargs)
    if not isinstance(fingerprint, tuple):
        return None
    parts = []

    def write(value):
        if isinstance(value, _Ref):
            parts.append(f"<{value.name}>")
        elif isinstance(value, tuple):
            parts.append("(")
            for item in value:
                write(item)
            parts.append(")")
        elif isinstance(value, type):
            parts.append(f"<{value.__module__}.{value.__qualname__}>")
        elif isinstance(value, (str, int, float, complex, bool, bytes)) or value is None:
            parts.append(repr(value))
        else:  # a tree definition, a dtype string, ...: its text, with no address in it
            parts.append(re.sub(r" at 0x[0-9a-f]+", "", str(value)))
        parts.append(",")

    write(fingerprint)
    return hashlib.sha1("".join(parts).encode()).hexdigest()


FINGERPRINT_DEPTH = 8
# functions of these packages are summarised by identity, not followed into their globals
LIBRARY_MODULES = frozenset(
    {"jax", "jaxlib", "numpyro", "numpy", "scipy", "funsor", "optax", "arviz", "blackjax"}
    | {"ppl", "inference", "builtins", "functools", "math"}
)


def program_fingerprint(fn, args=(), kwargs=None):
    """What a compiled program of ``fn(*args, **kwargs)`` depends on, as a hashable key: the
    function, its data (:func:`data_fingerprint`) and the values it reads from its globals,
    its closure and, for a method or a callable object, the object's attributes
    (:func:`function_fingerprint`). When something cannot be summarised, a fresh ``object()``:
    a key equal to no other, so nothing compiled is reused."""
    data = data_fingerprint(args, kwargs or {})
    reads = function_fingerprint(fn)
    if data is None or reads is None:
        return object()
    # a method or a callable object by its function or class: its object is summarised in
    # ``reads``, so a fresh object with the same contents reuses the program
    if isinstance(fn, types.MethodType):
        head = _Ref(fn.__func__)
    else:
        head = _Ref(type(fn) if _is_user_object(fn) else fn)
    return head, data, reads


def callables_fingerprint(*fns):
    """What a program built from the user's callables ``fns`` depends on (a score function, a
    state-space model's densities, a proposal, a coefficient of diffusion time): each by
    :func:`function_fingerprint`, so that the values they read from globals, closures and
    their objects' attributes are part of the program's key (``None`` entries stay ``None``;
    plain numbers by value). A fresh ``object()`` (no reuse) when one cannot be summarised."""
    parts = []
    for fn in fns:
        if fn is None or isinstance(fn, int | float | complex | str):
            parts.append(fn)
            continue
        part = function_fingerprint(fn)
        if part is None:
            return object()
        parts.append(part)
    return tuple(parts)


def function_fingerprint(fn, depth: int = 0, seen: set | None = None):
    """The values a Python function reads from its module globals and its closure, each by
    :func:`_value_fingerprint` (arrays by content, so that changing a global ``A`` or a prior
    scale between calls is seen), following the plain functions it calls up to
    ``FINGERPRINT_DEPTH`` levels (deeper calls give ``None``: no reuse); library modules by
    identity, a user's module by the attributes the function reads from it
    (:func:`_read_fingerprint`), a user's class by its data attributes. A bound method adds
    its object's attributes; a callable object is its attributes and its ``__call__``; a
    ``partial`` its bound arguments. ``None`` when a value is neither an array, a pytree of
    arrays, a user object made of those, nor hashable (a mutable container of other
    things)."""
    seen = set() if seen is None else seen
    if getattr(fn, "__code__", None) is None and getattr(fn, "func", None) is None:
        return _value_fingerprint(fn, depth, seen)  # a callable object
    if id(fn) in seen:
        return ()  # its reads are in the fingerprint already
    if depth > FINGERPRINT_DEPTH:
        return None  # reads not followed: no reuse, rather than a stale program
    seen.add(id(fn))
    if isinstance(fn, types.MethodType):
        owner = _value_fingerprint(fn.__self__, depth + 1, seen)
        called = function_fingerprint(fn.__func__, depth + 1, seen)
        return None if owner is None or called is None else (owner, called)
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None:
        bound = data_fingerprint(getattr(fn, "args", ()), getattr(fn, "keywords", {}))
        called = function_fingerprint(inner, depth + 1, seen)
        return None if bound is None or called is None else (_Ref(inner), bound, called)
    names = set()
    stack = [fn.__code__]
    while stack:  # the function's own names and those of its nested functions / lambdas
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    module_globals = getattr(fn, "__globals__", {})
    parts = []
    for name in sorted(names):
        if name in module_globals:
            value = _read_fingerprint(module_globals[name], names, depth, seen)
            if value is None:
                return None
            parts.append((name, value))
    for index, cell in enumerate(getattr(fn, "__closure__", None) or ()):
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later)
            continue
        value = _read_fingerprint(contents, names, depth, seen)
        if value is None:
            return None
        parts.append((index, value))
    return tuple(parts)


def _read_fingerprint(value, names: set, depth: int, seen: set):
    """A value a function reads: by :func:`_value_fingerprint`, except a module of the user's
    (a ``settings.py`` of constants), which is its identity and those of its attributes whose
    names the function's code uses (``settings.LOC``), each by :func:`_read_fingerprint`."""
    if not (isinstance(value, types.ModuleType) and _is_user_module(value)):
        return _value_fingerprint(value, depth, seen)
    if depth > FINGERPRINT_DEPTH:
        return None
    parts = [_Ref(value)]
    for name in sorted(names):
        if name.startswith("__") or not hasattr(value, name):
            continue
        part = _read_fingerprint(getattr(value, name), names, depth + 1, seen)
        if part is None:
            return None
        parts.append((name, part))
    return tuple(parts)


def _is_user_module(module: types.ModuleType) -> bool:
    """A module the user wrote: neither a library of :data:`LIBRARY_MODULES`, nor the
    standard library, nor an installed package."""
    root = module.__name__.split(".")[0]
    if root in LIBRARY_MODULES or root in sys.stdlib_module_names:
        return False
    path = getattr(module, "__file__", None) or ""
    return not any(part in path for part in ("site-packages", "dist-packages"))


def _value_fingerprint(value, depth: int, seen: set):
    if isinstance(value, type) and not _is_library_class(value):
        return _class_fingerprint(value, depth, seen)
    if isinstance(value, (types.ModuleType, type)):
        return _Ref(value)
    if isinstance(value, types.FunctionType):
        if (value.__module__ or "").split(".")[0] in LIBRARY_MODULES:
            return _Ref(value)
        called = function_fingerprint(value, depth + 1, seen)
        return None if called is None else (_Ref(value), called)
    if isinstance(value, types.MethodType):
        return function_fingerprint(value, depth + 1, seen)
    if (type(value).__module__ or "").startswith("pandas") and hasattr(value, "to_numpy"):
        return _pandas_fingerprint(value)
    if _is_user_object(value):
        return _object_fingerprint(value, depth, seen)
    part = _leaf_fingerprint(value)
    if part is not None and not isinstance(value, tuple):
        return part
    try:
        leaves, treedef = jax.tree.flatten(value)
    except Exception:  # noqa: BLE001 - e.g. a dict with unorderable keys: not summarisable
        return None
    if len(leaves) == 1 and leaves[0] is value:
        return part  # hashable, not a container: by its own hash (identity for most objects)
    parts = [_value_fingerprint(leaf, depth + 1, seen) for leaf in leaves]
    return None if any(p is None for p in parts) else (treedef, tuple(parts))


def _pandas_fingerprint(value):
    """A pandas DataFrame, Series or Index by its contents (pandas' own row hashes, index
    included), its labels and dtypes; ``None`` when pandas cannot hash it."""
    import pandas as pd

    try:
        rows = pd.util.hash_pandas_object(value, index=True).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts)
        return None
    labels = tuple(map(str, getattr(value, "columns", ()))) + (str(getattr(value, "name", "")),)
    dtypes = str(getattr(value, "dtypes", getattr(value, "dtype", "")))
    return _Ref(type(value)), labels, dtypes, hashlib.sha1(rows.tobytes()).hexdigest()


def _is_library_class(cls: type) -> bool:
    return (cls.__module__ or "").split(".")[0] in LIBRARY_MODULES


def _class_fingerprint(cls: type, depth: int, seen: set):
    """A user class by identity and the data attributes of it and its user base classes (a
    class used as a namespace of settings, ``Config.scale``); methods are followed where
    they are called."""
    if id(cls) in seen:
        return ("seen", _Ref(cls))
    if depth > FINGERPRINT_DEPTH:
        return None
    seen.add(id(cls))
    parts = [_Ref(cls)]
    for klass in cls.__mro__:
        if _is_library_class(klass):
            continue
        for name, attribute in sorted(vars(klass).items()):
            if name.startswith("__") or callable(attribute) or hasattr(attribute, "__get__"):
                continue
            part = _value_fingerprint(attribute, depth + 1, seen)
            if part is None:
                return None
            parts.append((klass.__qualname__, name, part))
    return tuple(parts)


def _is_user_object(value) -> bool:
    """An instance of a class the user wrote (not a builtin, array, container or library
    class), whose attributes a model may read: a config object, a model class."""
    plain = (np.ndarray, jax.Array, np.generic, tuple, list, dict, type, types.ModuleType)
    if isinstance(value, plain) or inspect.isroutine(value):
        return False  # data, classes, modules, functions and methods have their own rules
    return not _is_library_object(value) and hasattr(value, "__dict__")


def _object_fingerprint(value, depth: int, seen: set):
    """A user object by its class, its attributes (each by :func:`_value_fingerprint`) and,
    for a callable object, its ``__call__``; ``None`` past ``FINGERPRINT_DEPTH`` or when an
    attribute cannot be summarised."""
    if id(value) in seen:
        return ("seen", _Ref(value))
    if depth > FINGERPRINT_DEPTH:
        return None
    seen.add(id(value))
    cls = _class_fingerprint(type(value), depth + 1, seen)
    if cls is None:
        return None
    parts = [cls]
    call = type(value).__call__ if callable(value) else None
    if isinstance(call, types.FunctionType):
        called = function_fingerprint(call, depth + 1, seen)
        if called is None:
            return None
        parts.append(called)
    for name, attribute in sorted(vars(value).items()):
        part = _value_fingerprint(attribute, depth + 1, seen)
        if part is None:
            return None
        parts.append((name, part))
    return tuple(parts)
