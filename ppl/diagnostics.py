"""Convergence and sampler diagnostics of an MCMC ``Posterior``, with the usual thresholds.

The checks Stan's ``diagnose`` and PyMC run after sampling:

* **divergences** after warm-up: a transition whose energy error exceeded the divergence
  threshold; the chain could not follow the posterior's curvature there, so expectations may be
  biased (Betancourt 2017, "A conceptual introduction to Hamiltonian Monte Carlo", sec. 6.2).
* **maximum tree depth** (NUTS): trajectories cut off before a U-turn; an efficiency problem,
  not a bias.
* **E-BFMI** per chain, ``sum_n (E_n - E_{n-1})^2 / sum_n (E_n - mean E)^2`` over the energies
  of the draws (Betancourt 2016, "Diagnosing suboptimal cotangent disintegrations in
  Hamiltonian Monte Carlo", eq. 9): below 0.3 the momentum resampling explores the energy
  distribution poorly (heavy tails, a funnel).
* **R-hat**: rank-normalised split R-hat of every latent site element (Vehtari, Gelman, Simpson,
  Carpenter & Bürkner 2021, "Rank-normalization, folding, and localization", sec. 4.1), above
  1.01; needs at least two chains.
* **bulk and tail ESS** (same paper, sec. 4.2-4.3) below 100 per chain: the MCSE estimates
  themselves are then unreliable.

R-hat and ESS are ArviZ's estimators (``az.rhat``, ``az.ess(method="bulk" | "tail")``, which
follow the paper), vectorised over the elements of every site, because ArviZ evaluates them
one element at a time in Python: for 4 chains x 1000 draws on one core, 2000 elements take
9.0-9.9 s in ArviZ and 4.4-5.2 s here, 20 elements 83-92 ms and 25 ms. The test suite checks
agreement with ArviZ to rounding. (Tail ESS is at the 5% and 95% quantiles, as in the paper,
Stan and ArviZ 0.2x; ArviZ 1.x's ``az.ess(method="tail")`` defaults to the quantiles of its
credible-interval probability, 11% and 89%, so its summary table can show other values.)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.special import ndtri

from ppl.validation import check_real

MAX_RHAT = 1.01
MIN_ESS_PER_CHAIN = 100
MIN_E_BFMI = 0.3


@dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose`: the measured values and the problems found, in words.

    Attributes:
        divergences: divergent transitions after warm-up (``None`` if the kernel has none).
        max_treedepth_hits: draws whose NUTS trajectory hit the maximum tree depth
            (``None`` for other kernels).
        e_bfmi: E-BFMI of each chain (``None`` without an ``energy`` statistic).
        max_rhat: ``(value, "site[index]")`` of the largest R-hat (``None`` with one chain).
        min_ess_bulk, min_ess_tail: ``(value, "site[index]")`` of the smallest ESS.
        problems: one sentence per failed check; empty when every check passed.
    """

    num_chains: int
    num_draws: int
    divergences: int | None = None
    max_treedepth_hits: int | None = None
    e_bfmi: np.ndarray | None = None
    max_rhat: tuple[float, str] | None = None
    min_ess_bulk: tuple[float, str] | None = None
    min_ess_tail: tuple[float, str] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.num_chains} chain(s) x {self.num_draws} draws: "
        note = " (R-hat needs two chains or more)" if self.num_chains == 1 else ""
        return report(head, note, self.problems, self._passed())

    def _passed(self) -> list[str]:
        out = []
        if self.divergences is not None:
            out.append("no divergences")
        if self.max_treedepth_hits is not None:
            out.append("no maximum tree depth hits")
        if self.max_rhat is not None:
            out.append(f"R-hat <= {self.max_rhat[0]:.3f}")
        if self.min_ess_bulk is not None:
            out.append(f"bulk ESS >= {self.min_ess_bulk[0]:.0f}")
        if self.min_ess_tail is not None:
            out.append(f"tail ESS >= {self.min_ess_tail[0]:.0f}")
        if self.e_bfmi is not None:
            out.append(f"E-BFMI >= {np.min(self.e_bfmi):.2f}")
        return out


def report(head: str, note: str, problems: list[str], passed: list[str]) -> str:
    """The text of a diagnosis: the passed checks' values on one line, or one line per
    problem."""
    if not problems:
        return head + "no problems found (" + ", ".join(passed) + ")" + note
    return head + f"{len(problems)} problem(s){note}\n" + "\n".join(f"- {p}" for p in problems)


def diagnose(
    post,
    *,
    max_rhat: float = MAX_RHAT,
    min_ess_per_chain: float = MIN_ESS_PER_CHAIN,
    min_e_bfmi: float = MIN_E_BFMI,
) -> Diagnosis:
    """Run the checks of the module docstring on an MCMC ``Posterior``.

    R-hat and ESS are computed over the latent sites (deterministic sites are functions of
    them); elements that are constant over all draws are skipped.
    """
    import arviz as az

    max_rhat = check_real("max_rhat", max_rhat, 1.0, low_open=True)
    min_ess_per_chain = check_real("min_ess_per_chain", min_ess_per_chain, 0.0)
    min_e_bfmi = check_real("min_e_bfmi", min_e_bfmi, 0.0)
    chains, draws = post.num_chains, post.num_draws
    problems: list[str] = []
    stats = post.stats
    result: dict = {}

    if "diverging" in stats:
        n = int(np.sum(stats["diverging"]))
        result["divergences"] = n
        if n:
            problems.append(
                f"{n} divergent transition(s) after warm-up ({_percent(n / (chains * draws))} of "
                "draws): the posterior may be biased there; consider a higher target_accept or "
                "a reparametrisation"
            )
    if "reached_max_treedepth" in stats:
        n = int(np.sum(stats["reached_max_treedepth"]))
        result["max_treedepth_hits"] = n
        if n:
            problems.append(
                f"{n} draw(s) ({n / (chains * draws):.1%}) hit the maximum tree depth: "
                "trajectories were cut short (an efficiency problem, not a bias); consider a "
                "larger max_tree_depth or a reparametrisation"
            )
    if "log_likelihood_estimate" in stats:  # PMMH: a chain stuck where the filter fails
        estimates = np.asarray(stats["log_likelihood_estimate"]).reshape(chains, -1)
        stuck = [c for c in range(chains) if not np.any(np.isfinite(estimates[c]))]
        if stuck:
            problems.append(
                f"chain(s) {stuck} never had a finite likelihood estimate: they started where "
                "the particle filter's likelihood is zero and accepted no move from there (a "
                "proposal there compares -inf with -inf); give init= inside the region the "
                "data allow, or more particles"
            )
    if "energy" in stats and draws > 2:
        bfmi = np.atleast_1d(np.asarray(az.bfmi(np.asarray(stats["energy"], np.float64))))
        result["e_bfmi"] = bfmi
        low = np.flatnonzero(bfmi < min_e_bfmi)
        if low.size:
            problems.append(
                f"E-BFMI below {min_e_bfmi} in chain(s) {', '.join(map(str, low))} "
                f"(lowest {bfmi.min():.2f}): the energy distribution is poorly explored "
                "(heavy tails or a funnel); consider a reparametrisation"
            )

    if draws < 4:
        problems.append(
            f"only {draws} draw(s) per chain: R-hat and ESS need 4 or more, so convergence "
            "was not checked; run more draws"
        )
    blocks = [(labels, rhat_and_ess(x)) for labels, x in _latent_blocks(post)] if draws >= 4 else []
    if blocks:
        labels = [label for labs, _ in blocks for label in labs]
        rhat, bulk, tail = (
            None if values[0] is None else np.concatenate(values)
            for values in zip(*(b for _, b in blocks), strict=True)
        )
        if rhat is not None and not np.all(np.isnan(rhat)):
            i = int(np.nanargmax(rhat))
            result["max_rhat"] = (float(rhat[i]), labels[i])
            if rhat[i] > max_rhat:
                problems.append(
                    f"R-hat up to {rhat[i]:.3f} ({labels[i]}) > {max_rhat}: the chains have "
                    "not mixed; run longer or reparametrise, and do not trust the estimates"
                )
        floor = min_ess_per_chain * chains
        for method, ess in (("bulk", bulk), ("tail", tail)):
            if np.all(np.isnan(ess)):
                continue
            i = int(np.nanargmin(ess))
            result[f"min_ess_{method}"] = (float(ess[i]), labels[i])
            if ess[i] < floor:
                problems.append(
                    f"{method} ESS down to {ess[i]:.0f} ({labels[i]}) < {floor:g} "
                    f"({min_ess_per_chain:g} per chain): the Monte Carlo standard errors are "
                    "unreliable; run more draws"
                )
    return Diagnosis(chains, draws, problems=problems, **result)


def warn_if_problems(post) -> None:
    """Warn once, listing every failed check, as Stan and PyMC do after sampling."""
    diagnosis = post.diagnose()
    if not diagnosis.ok:
        warnings.warn(
            "sampling problems (print(post.diagnose()) for the report):\n"
            + "\n".join(f"- {p}" for p in diagnosis.problems),
            stacklevel=3,
        )


def warn_if_nonfinite(arrays: dict, where: str, stacklevel: int = 3) -> None:
    """Warn naming each site of ``arrays`` with NaN or infinite values and how many (a
    deterministic site or a predictive draw the model computes as ``log`` or ``sqrt`` of a
    negative number, or an overflow), rather than let NaN reach the summaries silently."""
    bad = []
    for name, value in arrays.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        count = int(value.size - np.count_nonzero(np.isfinite(value)))
        if count:
            bad.append(f"'{name}' ({count} of {value.size} values)")
    if bad:
        warnings.warn(
            f"{where}: NaN or infinite values in {', '.join(bad)}; the model computes them at "
            "some draws (a log or sqrt of a negative number, an overflow), and their "
            "summaries will be NaN or infinite",
            stacklevel=stacklevel,
        )


def _latent_blocks(post, block: int = 1024):
    """``(labels, draws (chains, draws, K <= block))`` for the latent site elements that vary
    (deterministic sites are functions of these), in float64, a block at a time."""
    chains, draws = post.num_chains, post.num_draws
    for name in getattr(post.compiled, "latents", None) or post.samples:
        if name not in post.samples:
            continue
        site = np.asarray(post.samples[name])
        flat = site.reshape(chains, draws, -1)
        for start in range(0, flat.shape[2], block):
            x = flat[:, :, start : start + block].astype(np.float64)
            varying = np.flatnonzero(np.ptp(x.reshape(chains * draws, -1), axis=0) > 0)
            if varying.size:
                labels = [_label(name, site.shape[2:], start + i) for i in varying]
                yield labels, x[:, :, varying]


def _label(name: str, shape: tuple, i: int) -> str:
    return name if not shape else f"{name}[{', '.join(map(str, np.unravel_index(i, shape)))}]"


def _split(x: np.ndarray) -> np.ndarray:
    """``(C, N, K)`` -> ``(2C, N // 2, K)``: first and last halves (the middle draw of an odd
    ``N`` dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks of each element (Blom 1958 offset 3/8; Vehtari et
    al. 2021, eq. 14): ``z = Phi^-1((r - 3/8) / (S + 1/4))`` over the ``S = C N`` draws, tied
    draws (a rejected Metropolis step repeats a value) given the mean of their ranks, as
    ``scipy.stats.rankdata(method="average")`` does."""
    c, n, k = x.shape
    size = c * n
    a = np.ascontiguousarray(x.reshape(size, k).T)  # (K, S): one row per element
    order = np.argsort(a, axis=-1)
    ordered = np.take_along_axis(a, order, axis=-1)
    starts = np.ones(a.shape, bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = np.arange(1.0, size + 1.0)
    scores = np.broadcast_to(ndtri((rank - 0.375) / (size + 0.25)), a.shape)
    tied = ~starts.all(axis=-1)
    if tied.any():
        ends = np.ones((int(tied.sum()), size), bool)
        ends[:, :-1] = starts[tied, 1:]
        first = np.maximum.accumulate(np.where(starts[tied], rank, 0.0), axis=-1)
        last = np.minimum.accumulate(np.where(ends, rank, size)[:, ::-1], axis=-1)[:, ::-1]
        scores = scores.copy()
        scores[tied] = ndtri(((first + last) / 2 - 0.375) / (size + 0.25))
    z = np.empty(a.shape)
    np.put_along_axis(z, order, scores, axis=-1)
    return z.T.reshape(x.shape)


def _rhat(x: np.ndarray) -> np.ndarray:
    """Classic potential scale reduction ``sqrt(((N - 1) / N W + B / N) / W)`` per element."""
    n = x.shape[1]
    within = x.var(axis=1, ddof=1).mean(axis=0)
    between_over_n = x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((n - 1) / n * within + between_over_n) / within)


def rhat_and_ess(x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat (``None`` with one chain), bulk ESS and tail ESS of
    ``(chains, draws, K)`` draws, per element (Vehtari et al. 2021):

    * R-hat: the larger of the R-hat of the rank-normalised split chains and that of the
      split chains folded about their median (sec. 4.1);
    * bulk ESS: the ESS of the rank-normalised split chains (sec. 4.2);
    * tail ESS: the smaller ESS of the indicators ``x <= q_0.05`` and ``x <= q_0.95`` on split
      chains (sec. 4.3).
    """
    split = _split(x)
    z = _rank_normalise(split)
    rhat = None
    if x.shape[0] >= 2:
        folded = np.abs(split - np.median(split.reshape(-1, split.shape[2]), axis=0))
        rhat = np.fmax(_rhat(z), _rhat(_rank_normalise(folded)))  # inf if chains are stuck
    pooled = x.reshape(-1, x.shape[2])
    tail = np.minimum(
        *(_ess(_split((x <= np.quantile(pooled, q, axis=0)).astype(float))) for q in (0.05, 0.95))
    )
    return rhat, _ess(z), tail


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance ``(1/N) sum_t (x_t - mean)(x_t+lag - mean)`` at every lag along the
    last axis, by FFT (the last axis is ~3x faster than numpyro's ``autocovariance(axis=1)``)."""
    n = x.shape[-1]
    padded = next_fast_len(2 * n)
    spectrum = rfft(x - x.mean(axis=-1, keepdims=True), n=padded, axis=-1)
    return irfft(spectrum * spectrum.conj(), n=padded, axis=-1)[..., :n] / n


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of ``(chains, draws, K)`` draws per element, Stan's estimator (Vehtari et al. 2021,
    sec. 3.2; Geyer 1992): autocorrelations ``rho_t = 1 - (W - mean_c acov_c(t)) / var+``,
    summed over Geyer's initial positive sequence of pair sums ``P_k = rho_2k + rho_2k+1`` made
    monotone, ``tau = -1 + 2 sum_k<j P_k + rho_2j`` (``j``: the first non-positive pair) and
    ``ESS = C N / max(tau, 1 / log10(C N))``. Constant elements get ``C N``."""
    c, n, k = x.shape
    constant = np.ptp(x.reshape(c * n, k), axis=0) < np.finfo(float).resolution
    acov = np.moveaxis(_autocovariance(np.ascontiguousarray(np.swapaxes(x, 1, 2))), 2, 1)
    within = acov[:, 0].mean(axis=0) * n / (n - 1)
    var_plus = within * (n - 1) / n + (x.mean(axis=1).var(axis=0, ddof=1) if c > 1 else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (within - acov.mean(axis=0)) / var_plus  # (N, K)
    rho[0] = 1.0
    num_pairs = max((n - 3) // 2 + 1, 1)  # pairs k = 0 .. with 2k < n - 2 (and k = 0)
    pairs = rho[0 : 2 * num_pairs : 2] + rho[1 : 2 * num_pairs : 2]  # (num_pairs, K)
    stops = pairs <= 0
    j = np.where(stops.any(axis=0), stops.argmax(axis=0), num_pairs - 1)
    monotone = np.minimum.accumulate(pairs, axis=0)
    below_j = np.arange(num_pairs)[:, None] < j
    last = np.take_along_axis(rho[0 : 2 * num_pairs : 2], j[None], axis=0)[0]
    last_pair = np.take_along_axis(pairs, j[None], axis=0)[0]
    last = np.where((last > 0) | (last_pair >= 0), last, 0.0)
    tau = -1.0 + 2.0 * np.sum(np.where(below_j, monotone, 0.0), axis=0) + last
    tau = np.maximum(tau, 1.0 / np.log10(c * n))
    ess = c * n / tau
    ess = np.where(np.isnan(rho).any(axis=0), np.nan, ess)
    return np.where(constant, float(c * n), ess)


def _percent(fraction: float) -> str:
    """``0.014 -> '1.4%'``; small fractions keep two significant digits (``'0.025%'``), so one
    divergence in 4000 draws does not read as ``0.0%``."""
    return f"{fraction:.1%}" if fraction >= 0.001 else f"{100 * fraction:.2g}%"
