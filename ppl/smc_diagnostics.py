"""Checks of an SMC ``Posterior`` (tempered or along diffusion time), with the usual thresholds.

SMC particles form no Markov chain, so R-hat and autocorrelation ESS do not apply. What can go
wrong, and what is checked instead (Chopin & Papaspiliopoulos 2020, *An Introduction to
Sequential Monte Carlo*, ch. 8.6 and 17.2; Dau & Chopin 2022, sec. 4):

* **weight degeneracy**: the effective sample size ``ESS = 1 / sum_n W_n^2`` of a step far below
  ``N``: the approximation there rests on a handful of particles. The tempered ladder aims at
  ``target_ess * N``, but misses it where no temperature step can reach it (a likelihood that
  is zero on most of the prior: the first stage rests on the few particles where it is not);
* **too few distinct particles** at the end: resampling duplicates particles and only the MCMC
  moves make them distinct again; a low fraction means the moves barely moved them (tempered)
  or the last weights were degenerate (diffusion time). Waste-free SMC keeps every state of
  its chains, rejected proposals' repeats included, so there only the acceptance of the moves
  is checked. Fewer than 100 distinct particles in all is too few for the posterior's mean
  whatever the weights did (the usual floor on an ESS; with one run, as along diffusion time,
  nothing else here sees the Monte Carlo error);
* **moves that rarely accept** (tempered): the acceptance rate of the rejuvenation kernel at a
  stage;
* **independent runs that disagree**: the spread of the runs' log-evidence estimates (above
  about one nat the estimate of ``log p(y)`` is unreliable), and, with ``R >= 4`` runs, the
  between-run ESS of every latent element, ``pooled variance / (sd of the run means)^2 * R``
  (what ``Posterior.summary()`` reports as ``ess_runs``) below 100. Its estimate has ``R - 1``
  degrees of freedom, so with two or three runs its minimum over many elements falls below
  100 by chance (a 50-d model, 2 runs x 300 healthy particles: 2 alarms in 5 seeds).
* an **interrupted** run (``post.partial``);
* **DPS**, which has no weights: it is flagged as a biased heuristic whose error no check sees.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ppl.diagnostics import _label, report
from ppl.validation import check_count, check_real

MIN_ESS_FRACTION = 0.01
MIN_DISTINCT_TEMPERED = 0.5
MIN_DISTINCT_DIFFUSION = 0.1
MIN_DISTINCT_PARTICLES = 100
MIN_RUNS_FOR_ESS = 4
MIN_ACCEPTANCE = 0.1
MAX_LOG_EVIDENCE_SD = 1.0
MIN_ESS_RUNS = 100


@dataclass(frozen=True)
class SMCDiagnosis:
    """The result of :func:`diagnose_smc`: the measured values and the problems, in words.

    Attributes:
        runs, particles: the independent runs ``R`` and particles ``N`` per run.
        tempered: tempered SMC (``runs=`` applies) rather than diffusion-time SMC.
        distinct_fraction: smallest fraction of distinct particles at the end, over the runs.
        min_ess_fraction: ``(ESS / N, run, step)`` of the lowest ESS along the run.
        min_acceptance: ``(rate, run, stage)`` of the lowest acceptance rate of the moves
            (``None`` without moves).
        log_evidence_sd: sd of the runs' log-evidence estimates (``None`` with one run).
        min_ess_runs: ``(value, "site[index]")`` of the smallest between-run ESS (``None``
            with one run).
        problems: one sentence per failed check; empty when every check passed.
    """

    runs: int
    particles: int
    distinct_fraction: float
    tempered: bool = True
    min_ess_fraction: tuple[float, int, int] | None = None
    min_acceptance: tuple[float, int, int] | None = None
    log_evidence_sd: float | None = None
    min_ess_runs: tuple[float, str] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.runs} run(s) x {self.particles} particles: "
        note = ""
        if self.tempered and self.runs == 1:
            note = " (runs >= 2 also check the runs against each other)"
        return report(head, note, self.problems, self._passed())

    def _passed(self) -> list[str]:
        out = [f"{self.distinct_fraction:.0%} distinct particles"]
        if self.min_ess_fraction is not None:
            out.append(f"ESS >= {self.min_ess_fraction[0]:.1%} of N")
        if self.min_acceptance is not None:
            out.append(f"acceptance >= {self.min_acceptance[0]:.2f}")
        if self.log_evidence_sd is not None:
            out.append(f"log-evidence sd {self.log_evidence_sd:.2f} over runs")
        if self.min_ess_runs is not None:
            out.append(f"between-run ESS >= {self.min_ess_runs[0]:.0f}")
        return out


def diagnose_smc(
    post,
    *,
    min_ess_fraction: float = MIN_ESS_FRACTION,
    min_distinct: float | None = None,
    min_distinct_particles: int = MIN_DISTINCT_PARTICLES,
    min_acceptance: float = MIN_ACCEPTANCE,
    max_log_evidence_sd: float = MAX_LOG_EVIDENCE_SD,
    min_ess_runs: float = MIN_ESS_RUNS,
) -> SMCDiagnosis:
    """Run the checks of the module docstring on an SMC ``Posterior``.

    ``min_distinct`` defaults to 0.5 for tempered SMC (the moves should make the resampled
    particles distinct) and 0.1 along diffusion time (no moves after the last resampling).
    """
    method = str(post.attrs.get("method", ""))
    tempered = method.startswith("smc/tempered")
    if min_distinct is None:
        min_distinct = MIN_DISTINCT_TEMPERED if tempered else MIN_DISTINCT_DIFFUSION
    for name, value in (
        ("min_ess_fraction", min_ess_fraction),
        ("min_distinct", min_distinct),
        ("min_acceptance", min_acceptance),
    ):
        check_real(name, value, 0.0, 1.0)
    check_count("min_distinct_particles", min_distinct_particles, minimum=0)
    check_real("max_log_evidence_sd", max_log_evidence_sd, 0.0, low_open=True)
    check_real("min_ess_runs", min_ess_runs, 0.0)
    runs, particles = post.num_chains, post.num_draws
    problems: list[str] = []
    result: dict = {}

    if method == "smc/diffusion/dps":
        problems.append(
            "DPS is a biased heuristic with no weights: these checks cannot see its error; "
            "compare with method='mcgdiff' or 'tds'"
        )
    if method == "smc/diffusion/heuristic":
        problems.append(
            "the heuristic (weighted=False) samples a different law than the target: these "
            "checks cannot see its error; use the weighted sampler (FKC)"
        )
    if post.partial:
        problems.append(
            "the run was interrupted: the particles do not target the posterior yet "
            "(post.partial); run again (tempered SMC resumes from a checkpoint= file)"
        )
    latents = _latent_matrix(post)
    distinct_count = min(_distinct_rows(latents[r]) for r in range(runs))
    distinct = distinct_count / particles
    if distinct_count < min_distinct_particles:
        problems.append(
            f"only {distinct_count} distinct particle(s) in a run (< {min_distinct_particles}): "
            "too few to represent the posterior, whatever the weights did; use more particles"
        )
    waste_free = tempered and bool(post.attrs.get("waste_free", 0))
    if distinct < min_distinct and not waste_free:
        cure = (
            "the moves barely moved the resampled particles; raise num_mcmc_steps or use waste_free"
            if tempered
            else "the last weights were degenerate; use more particles or steps"
        )
        problems.append(
            f"only {distinct:.0%} of the particles are distinct at the end (< "
            f"{min_distinct:.0%}): {cure}"
        )
    ess = post.stages.get("ess")
    if ess is not None and np.any(np.isfinite(ess)):
        run, step = np.unravel_index(np.nanargmin(ess), ess.shape)
        fraction = float(ess[run, step]) / particles
        result["min_ess_fraction"] = (fraction, int(run), int(step))
        if fraction < min_ess_fraction:
            cure = (
                "the likelihood is negligible on most of the particles there (little prior "
                "mass where the data fit); use more particles or a prior closer to the data"
                if tempered
                else "use more particles or steps"
            )
            problems.append(
                f"the weights degenerated: ESS {fraction:.1%} of N at "
                f"{'stage' if tempered else 'step'} {step} (< {min_ess_fraction:.0%}); the "
                f"approximation there rests on {ess[run, step]:.0f} particle(s); {cure}"
            )
    acceptance = post.stages.get("acceptance_rate")
    if acceptance is not None and np.any(np.isfinite(acceptance)):
        run, stage = np.unravel_index(np.nanargmin(acceptance), acceptance.shape)
        rate = float(acceptance[run, stage])
        result["min_acceptance"] = (rate, int(run), int(stage))
        if rate < min_acceptance:
            problems.append(
                f"the MCMC moves accepted {rate:.1%} of proposals at stage {stage} (< "
                f"{min_acceptance:.0%}): the particles barely moved; raise num_mcmc_steps or "
                "try another kernel"
            )
    if runs >= 2:
        log_z = post.stats.get("log_marginal_likelihood")
        if log_z is not None and np.all(np.isfinite(log_z)):
            sd = float(np.std(np.asarray(log_z, np.float64), ddof=1))
            result["log_evidence_sd"] = sd
            if sd > max_log_evidence_sd:
                problems.append(
                    f"the runs' log-evidence estimates spread by {sd:.2f} nats (> "
                    f"{max_log_evidence_sd:g}): log_evidence is unreliable; use more particles "
                    "or MCMC steps"
                )
    if runs >= MIN_RUNS_FOR_ESS:
        latent_names = getattr(post.compiled, "latents", None)
        errors = {k: v[1] for k, v in between_run_error(post, latent_names).items()}
        errors = {k: v for k, v in errors.items() if np.isfinite(v) or v == np.inf}
        if errors:
            label = min(errors, key=errors.get)
            worth = errors[label]
            result["min_ess_runs"] = (worth, label)
            if worth < min_ess_runs:
                problems.append(
                    f"the runs disagree: between-run ESS down to {worth:.0f} ({label}) < "
                    f"{min_ess_runs:g}; a run may have missed a mode; use more particles or "
                    "MCMC steps"
                )
    return SMCDiagnosis(runs, particles, distinct, tempered, problems=problems, **result)


def warn_if_smc_problems(post, stacklevel: int) -> None:
    """Warn once after a weighted SMC run whose checks failed, listing every problem, as
    :func:`ppl.diagnostics.warn_if_problems` does after MCMC. An interrupted run (warned about
    already) and DPS (a heuristic without weights, which every diagnosis flags as such) are
    left to ``post.diagnose()``."""
    if post.partial or str(post.attrs.get("method", "")) == "smc/diffusion/dps":
        return
    diagnosis = diagnose_smc(post)
    if not diagnosis.ok:
        warnings.warn(
            "SMC sampling problems (print(post.diagnose()) for the report):\n"
            + "\n".join(f"- {p}" for p in diagnosis.problems),
            stacklevel=stacklevel + 1,
        )


def _latent_matrix(post) -> np.ndarray:
    """``(runs, particles, K)``: the latent sites' elements side by side."""
    names = [
        n for n in (getattr(post.compiled, "latents", None) or post.samples) if n in post.samples
    ]
    runs, particles = post.num_chains, post.num_draws
    return np.concatenate(
        [np.asarray(post.samples[n]).reshape(runs, particles, -1) for n in names], axis=-1
    )


def _distinct_rows(x: np.ndarray) -> int:
    """The number of distinct rows of ``(N, K)`` ``x``, bit for bit: each row viewed as one
    opaque ``K * itemsize``-byte item, so one 1-d sort (``np.unique(x, axis=0)`` is 3.6x slower
    on 10^5 rows)."""
    if not x.size:
        return x.shape[0]
    rows = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    items = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))
    return int(np.unique(items.ravel()).size)


def between_run_error(post, names=None) -> dict[str, tuple[float, float]]:
    """``"site[index]" -> (mcse_mean, ess_runs)`` for every element of the sites ``names``
    (default all) of a posterior with ``R >= 2`` independent runs: ``mcse_mean = sd_r(mean_r) /
    sqrt(R)`` over the runs' particle means and ``ess_runs = pooled variance / mcse_mean^2``
    (infinite where the runs agree exactly, NaN for a constant element)."""
    runs = post.num_chains
    out = {}
    for name in post.samples if names is None else names:
        if name not in post.samples:
            continue
        site = np.asarray(post.samples[name], np.float64)
        flat = site.reshape(runs, site.shape[1], -1)
        mcse = flat.mean(axis=1).std(axis=0, ddof=1) / np.sqrt(runs)
        pooled = flat.reshape(-1, flat.shape[2]).var(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            worth = pooled / mcse**2
        for i in range(flat.shape[2]):
            out[_label(name, site.shape[2:], i)] = (float(mcse[i]), float(worth[i]))
    return out
