"""The result every backend returns: draws, diagnostics, evidence, and ArviZ export."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ppl import arviz_io


@dataclass
class Posterior:
    """Draws of a model's sites with their diagnostics.

    Attributes:
        samples: site name -> array shaped ``(chains, draws, *site_shape)`` (for SMC, ``chains``
            counts independent runs and ``draws`` particles).
        stats: per-draw diagnostics shaped ``(chains, draws)``, named as ArviZ's
            ``sample_stats`` group names them (``diverging``, ``energy``, ``tree_depth``,
            ``n_steps``, ``step_size``, ``acceptance_rate``, ``lp``).
        log_evidence: estimate of ``log p(data)`` where the method gives one, else ``None``.
        log_likelihood: observed site -> pointwise log-likelihood ``(chains, draws, *obs_shape)``.
        observed_data: observed site -> observed value.
        predictive: ArviZ group name (``prior``, ``prior_predictive``,
            ``posterior_predictive``, ``predictions``) -> {site: array ``(chains, draws, ...)``}.
        stages: per-stage / per-step diagnostics of SMC, ``{name: (runs, stages)}`` padded with
            NaN, exported as the ``smc_stages`` group.
        attrs: metadata (kernel, settings, ``partial`` when interrupted).
    """

    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    log_evidence: float | None = None
    log_likelihood: dict[str, np.ndarray] = field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    predictive: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stages: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    site_dims: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    compiled: object = field(default=None, repr=False)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    @property
    def observed_sites(self) -> set[str]:
        """The sites observed in the fit (the model's, or those with data or a likelihood)."""
        observed = set(getattr(self.compiled, "observed", None) or ())
        return observed | set(self.observed_data) | set(self.log_likelihood)

    @property
    def partial(self) -> bool:
        """True when the run was interrupted and holds only the draws completed by then."""
        return bool(self.attrs.get("partial", False))

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.samples.items())
        extra = f", log_evidence={self.log_evidence:.4f}" if self.log_evidence is not None else ""
        flag = ", partial" if self.partial else ""
        return (
            f"Posterior({self.attrs.get('method', '?')}: {self.num_chains} chains x "
            f"{self.num_draws} draws; {sites}{extra}{flag})"
        )

    def to_arviz(
        self, coords: dict | None = None, dims: dict | None = None, prior: dict | None = None
    ):
        """ArviZ data with groups posterior, sample_stats, log_likelihood, observed_data, ...

        An ``xarray.DataTree`` on ArviZ 1.x, an ``InferenceData`` on ArviZ 0.2x. A site's axes
        are named by its plates (``{site}_dim_{i}`` otherwise) and labelled ``0, 1, ...``;
        ``dims={site: [name per axis of one value]}`` renames them and
        ``coords={dim: labels}`` labels them, as ``az.from_numpyro`` does, in every group that
        has the site or dim (``coords={"school": names}`` labels a plate ``"school"``).

        ``prior``: prior draws ``{site: (chains, draws, ...)}``, as ``ppl.predictive`` returns
        them without a posterior; the observed sites go to the ``prior_predictive`` group, the
        others to ``prior`` (``az.from_numpyro(prior=...)`` splits them the same way).
        """
        prior_groups = self._prior_groups(prior)
        # one value's shape per site (a log-likelihood has the batch axes only: it comes last)
        value_shapes = {k: np.shape(v) for k, v in self.observed_data.items()}
        predictive = {**self.predictive, **prior_groups}
        for arrays in [self.samples, *predictive.values(), self.log_likelihood]:
            value_shapes.update(
                {k: np.shape(v)[2:] for k, v in arrays.items() if k not in value_shapes}
            )
        site_dims = arviz_io.with_user_dims(self.site_dims, dims, value_shapes)
        attrs = {k: v for k, v in self.attrs.items() if isinstance(v, (str, int, float, bool))}
        attrs = {k: (int(v) if isinstance(v, bool) else v) for k, v in attrs.items()}
        groups = {"posterior": arviz_io.dataset(self.samples, site_dims=site_dims, attrs=attrs)}
        per_draw = {k: v for k, v in self.stats.items() if np.ndim(v) >= 2}
        per_chain = {k: v for k, v in self.stats.items() if np.ndim(v) == 1}
        if per_draw or per_chain:
            stats = arviz_io.dataset(per_draw, attrs=attrs)
            for name, value in per_chain.items():
                stats[name] = (("chain",), np.asarray(value))
            groups["sample_stats"] = stats
        if self.log_likelihood:
            # one value per batch element: the site's dims without its event axes (the right)
            batch_dims = {
                name: site_dims.get(name, ())[: np.ndim(value) - 2]
                for name, value in self.log_likelihood.items()
            }
            groups["log_likelihood"] = arviz_io.dataset(self.log_likelihood, site_dims=batch_dims)
        if self.observed_data:
            groups["observed_data"] = arviz_io.dataset(
                self.observed_data, leading=(), site_dims=site_dims
            )
        for name, arrays in predictive.items():
            groups[name] = arviz_io.dataset(arrays, site_dims=site_dims)
        if self.stages:
            groups["smc_stages"] = arviz_io.dataset(self.stages, leading=("chain", "stage"))
        return arviz_io.to_arviz(arviz_io.with_user_coords(groups, coords))

    def _prior_groups(self, prior) -> dict[str, dict[str, np.ndarray]]:
        """``prior`` split into ArviZ's ``prior`` (latent sites) and ``prior_predictive``
        (the sites observed in this posterior's fit) groups."""
        if prior is None:
            return {}
        if not isinstance(prior, Mapping) or not prior:
            raise TypeError(
                "prior must be a non-empty dict {site: draws (chains, draws, ...)}, as "
                f"ppl.predictive(model, ...) returns it; got {type(prior).__name__}"
            )
        arrays = {name: np.asarray(value) for name, value in prior.items()}
        flat = sorted(name for name, value in arrays.items() if value.ndim < 2)
        if flat:
            raise ValueError(
                f"prior draws of {flat} lack the (chains, draws) leading axes; pass the dict "
                "that ppl.predictive returns (shaped (1, num_samples, ...))"
            )
        observed = self.observed_sites
        groups = {
            "prior": {k: v for k, v in arrays.items() if k not in observed},
            "prior_predictive": {k: v for k, v in arrays.items() if k in observed},
        }
        return {name: group for name, group in groups.items() if group}

    def summary(self, var_names=None, **kwargs):
        """ArviZ's summary table of the posterior group.

        For Markov chains: mean, sd, credible interval, MCSE, bulk / tail ESS and R-hat.

        For SMC the particles are not a chain: their order is the resampling's, and equal
        particles sit side by side, so autocorrelation-based ESS, MCSE and R-hat mean nothing.
        The table then holds the statistics only (``kind="stats"``: mean, sd, interval), and,
        with two or more independent runs, the Monte Carlo error measured between the runs:
        ``mcse_mean = sd_r(mean_r) / sqrt(R)`` over the ``R`` runs' particle means, and
        ``ess_runs = sd^2 / mcse_mean^2``, the number of independent draws worth the pooled
        particles (an estimate with ``R - 1`` degrees of freedom: use ``runs >= 8`` or so),
        rounded as ArviZ rounds its MCSE and ESS (3 and 0 decimals; not with
        ``round_to="none"``). Passing ``kind=`` gives ArviZ's own table, unchanged
        (``kind="all"``: ArviZ's ``mcse_mean`` and ``ess_bulk``, which treat each run's
        particles as a chain).
        """
        import arviz as az

        # in float64: ArviZ computes in the draws' dtype, and a float32 sd of finite draws up
        # to 6e37 (LogNormal(0, 100)) overflowed to inf
        wide = replace(
            self,
            samples={
                k: np.asarray(v, np.float64)
                if np.issubdtype(np.asarray(v).dtype, np.floating)
                else v
                for k, v in self.samples.items()
            },
        ).to_arviz()
        if not self.is_smc or "kind" in kwargs:
            return az.summary(wide, var_names=var_names, **kwargs)
        table = arviz_io.draws_summary(wide, var_names=var_names, **kwargs)
        if self.num_chains >= 2 and "sd" in table.columns:
            from ppl.smc_diagnostics import between_run_error

            errors = between_run_error(self)
            rounded = str(kwargs.get("round_to", "")).lower() != "none"
            for column, i, decimals in (("mcse_mean", 0, 3), ("ess_runs", 1, 0)):
                values = table.index.map(lambda k, i=i: errors.get(k, (np.nan, np.nan))[i])
                values = values.to_numpy(float)
                table[column] = np.round(values, decimals) if rounded else values
        return table

    @property
    def is_smc(self) -> bool:
        """True for sequential Monte Carlo results (tempered, diffusion-time)."""
        return str(self.attrs.get("method", "")).startswith("smc")

    def diagnose(self, **thresholds):
        """The checks of the method against the usual thresholds; ``print()`` the result.

        Markov chains (``ppl.mcmc``, ``ppl.pmmh``, :mod:`ppl.diagnostics`): divergences, tree
        depth, E-BFMI, R-hat and bulk / tail ESS. SMC (:mod:`ppl.smc_diagnostics`): weight
        degeneracy, distinct particles, acceptance of the moves, and the agreement of
        independent runs (log evidence, between-run ESS).
        """
        from ppl.diagnostics import diagnose
        from ppl.smc_diagnostics import diagnose_smc

        if self.is_smc:
            return diagnose_smc(self, **thresholds)
        method = str(self.attrs.get("method", ""))
        if not method.startswith(("mcmc", "pmmh")):
            raise ValueError(
                f"diagnose() checks Markov chains (ppl.mcmc, ppl.pmmh) and SMC (ppl.smc); this "
                f"posterior comes from {method or 'an unknown method'}"
            )
        return diagnose(self, **thresholds)

    def plot(self, path: str | None = None, var_names=None, **kwargs):
        """Trace plot (ArviZ ``plot_trace``); saved to ``path`` as an image when given.

        Returns what ArviZ returns: matplotlib axes on ArviZ 0.2x, a ``PlotCollection`` on 1.x.
        """
        import arviz as az
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plot = az.plot_trace(self.to_arviz(), var_names=var_names, **kwargs)
        if path is not None:
            if arviz_io.ARVIZ_1:
                plot.savefig(path)
            else:
                fig = np.ravel(plot)[0].figure
                fig.tight_layout()
                fig.savefig(path, dpi=100)
                plt.close(fig)
        return plot

    def plot_stages(self, path: str | None = None):
        """For SMC results: ESS and temperature (or diffusion time) per stage, one line per run.

        Returns the matplotlib figure; saved to ``path`` when given.
        """
        if not self.stages:
            raise ValueError("plot_stages needs an SMC result (this posterior has no stages)")
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [n for n in ("ess", "temperature", "time", "acceptance_rate") if n in self.stages]
        fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.2 * len(names)), sharex=True)
        for ax, name in zip(np.atleast_1d(axes), names, strict=True):
            for run in np.atleast_2d(self.stages[name]):
                ax.plot(run, marker=".")
            ax.set_ylabel(name)
        np.atleast_1d(axes)[-1].set_xlabel("stage")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return fig
