"""Tutorial 3: Feynman-Kac correctors for annealing and products of diffusion models.

Reproduces the two toy pictures of FKC (Skreta et al. 2025, Fig. 1), each with two models of the
same data under the VP SDE: the *exact* score of the Gaussian mixture and a *neural* score (the
small MLPs shipped in ``models/data``, trained by denoising score matching on samples of the
mixture; ``models.score_mlp.load_toy_prior``):

* annealing ``p^10`` of four modes at ``(+-1.5, +-1.5)`` with std 0.4 (the exact target has the
  same modes with std ``0.4 / sqrt(10) = 0.126``);
* the product of an "up" model (modes ``(+-1.5, 1.5)``) and a "down" model (modes
  ``(+-1.5, -1.5)``), whose exact product is ``1/2 N((-1.5, 0), 0.08 I) + 1/2 N((1.5, 0), 0.08 I)``.

Each picture has one row per model: the model's own samples (exact draws for the exact model),
the heuristic (the same SDE with scaled or summed scores and no weights), FKC, and histograms of
the within-mode deviation (annealing: ``|x_i| - 1.5``; product: ``y``) of the heuristic and FKC
against the exact target's density; the red circles mark one and two standard deviations of the
exact target. FKC samples the *model's* ``p^10`` or ``p_up p_down``: with the
neural models these differ slightly from the exact ones, and annealing raises the model's small
errors in mode mass and width to the 10th power (a 2% heavier or 1% narrower mode gains ~20%).

At beta = 10 the target-score SDE (noise ``zeta g`` with ``zeta = 1``) has about half the
target's variance, the FKC weights are nearly of infinite variance, the within-mode variance
comes out ~10% low and the mode masses of a single run are far off. More noise fixes it:
``noise=sqrt(3)`` (``zeta^2 = 3``, see ``inference.diffusion.fkc.noise_factor``), used for the
FKC panels of the annealing picture (the printout also gives ``zeta = 1``).

Run ``python tutorials/03_fkc_annealing_product.py [anneal.png] [product.png]`` (default file
names in the current directory); ``PPL_QUICK=1`` makes a short run.
"""

import math
import os
import sys

import jax
import matplotlib.pyplot as plt
import numpy as np

import ppl
from inference.diffusion import fkc as fkc_lib
from inference.diffusion.sde import VPSDE
from models import gmm_targets as gt
from models import score_mlp

QUICK = os.environ.get("PPL_QUICK") == "1"
N = 512 if QUICK else 4000
STEPS = 300 if QUICK else 1000  # beta = 10 makes the drift stiff: keep >= 300 Euler steps
ZETA = math.sqrt(3.0)  # annealing noise factor zeta (zeta^2 = 3) instead of the default 1
anneal_png = sys.argv[1] if len(sys.argv) > 1 else "fkc_annealing.png"
product_png = sys.argv[2] if len(sys.argv) > 2 else "fkc_product.png"

sde = VPSDE()
corners = np.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])


def models(name):
    """(exact, neural) priors of a toy mixture; the exact one also has log q_t."""
    return gt.exact_prior(score_mlp.toy_gmm(name), sde), score_mlp.load_toy_prior(name)


def draw(target, seed, **kw):
    if hasattr(target, "mixture"):  # the exact model: exact draws of the mixture itself
        return np.asarray(target.mixture.sample(jax.random.PRNGKey(seed), N))
    if isinstance(target, ppl.DiffusionPrior):
        return np.asarray(ppl.sample_diffusion(target, N, steps=STEPS, seed=seed).samples)
    res = ppl.sample_diffusion(target, N, steps=STEPS, seed=seed, progress_bar=False, **kw)
    return np.asarray(res.samples)


def draw_zeta(target, seed, zeta):
    """FKC with a numeric noise factor zeta, through the algorithm-level ``fkc_sample`` (whose
    ``noise`` also takes a number; ``ppl.sample_diffusion`` takes the named choices)."""
    comps = target.components
    log_q = (
        [p.log_density for p in comps] if all(hasattr(p, "log_density") for p in comps) else None
    )

    @jax.jit
    def run(key):
        return fkc_lib.fkc_sample(
            key,
            [p.score_fn for p in comps],
            target.coeffs,
            sde,
            2,
            N,
            STEPS,
            noise=zeta,
            log_q_T=log_q,
            resample_at_end=True,
        ).samples

    return np.asarray(run(jax.random.PRNGKey(seed)))


def within_mode_std(x):
    return float(np.sqrt(np.mean((np.abs(x) - 1.5) ** 2)))


def mode_masses(x):
    return [round(float(np.mean(np.all(np.sign(x) == np.sign(c), -1))), 3) for c in corners]


# 1. Annealing p^10 of the four-mode mixture. The exact prior also has the exact noised
#    log-density, which FKC uses for the exact initial weight.
anneal_rows = []
print("annealing p^10: within-mode std (exact 0.126), mode masses (exact 0.25 each)")
for label, prior in zip(("exact", "neural"), models("four_modes"), strict=True):
    target = ppl.anneal(prior, 10.0)
    base = draw(prior, 0)
    heur = draw(target, 1, weighted=False)
    fkc = draw_zeta(target, 1, ZETA)
    sets = [("model", base), ("no FKC", heur), ("FKC", fkc)]
    if not QUICK:
        sets.append(("FKC zeta=1", draw(target, 1)))  # the default noise: heavy-tailed weights
    for name, x in sets:
        print(f"  {label:6s} {name:10s} std {within_mode_std(x):.3f}  masses {mode_masses(x)}")
    anneal_rows.append((label, [("model p", base), ("no FKC (score x 10)", heur), ("FKC", fkc)]))

# 2. Product of experts "up" x "down".
product_rows = []
up_exact, up_nn = models("up")
down_exact, down_nn = models("down")
exact_gmm, log_z = gt.product_gmm(up_exact.mixture, down_exact.mixture)
print(f"product up x down (exact: y ~ N(0, 0.283^2), P(x > 0) = 0.5, log Z {float(log_z):.3f})")
for label, up, down in [("exact", up_exact, down_exact), ("neural", up_nn, down_nn)]:
    poe = ppl.product(up, down)
    base = np.concatenate([draw(up, 2)[: N // 2], draw(down, 3)[: N // 2]])
    heur = draw(poe, 4, weighted=False)
    res = ppl.sample_diffusion(poe, N, steps=STEPS, seed=4, progress_bar=False)
    fkc = np.asarray(res.samples)
    for name, x in [("no FKC", heur), ("FKC", fkc)]:
        print(
            f"  {label:6s} {name:7s} mean y {x[:, 1].mean():+.3f}  std y {x[:, 1].std():.3f}"
            f"  P(x > 0) {np.mean(x[:, 0] > 0):.3f}"
        )
    print(f"  {label:6s} FKC log Z estimate {res.log_normalizer:.3f}")
    product_rows.append(
        (label, [("up and down", base), ("no FKC (summed scores)", heur), ("FKC", fkc)])
    )


def panel(path, title, rows, centres, std, deviation, dev_label):
    """Scatter plots of each row's sets, then a histogram of ``deviation(x)`` of the last two
    (no FKC, FKC) against its exact N(0, std^2) density."""
    ncol = len(rows[0][1]) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.5 * ncol, 2.5 * len(rows)))
    theta = np.linspace(0.0, 2.0 * np.pi, 100)
    grid = np.linspace(-4 * std, 4 * std, 200)
    for r, (label, sets) in enumerate(rows):
        for c, (name, x) in enumerate(sets):
            ax = axes[r, c]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3, rasterized=True)
            for m in centres:
                for k in (1.0, 2.0):
                    circle = m[:, None] + k * std * np.stack([np.cos(theta), np.sin(theta)])
                    ax.plot(*circle, "r-", lw=0.6)
            ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xticks=[-2, 0, 2], yticks=[-2, 0, 2])
            ax.tick_params(labelsize=7)
            ax.set_title(f"{label}: {name}", fontsize=8)
        ax = axes[r, -1]
        bins = np.linspace(-4 * std, 4 * std, 41)
        for (name, x), colour in zip(sets[-2:], ("tab:orange", "tab:blue"), strict=True):
            ax.hist(deviation(x), bins, density=True, histtype="step", color=colour, label=name)
        exact = np.exp(-0.5 * (grid / std) ** 2) / (std * np.sqrt(2 * np.pi))
        ax.plot(grid, exact, "r-", lw=1, label="exact")
        ax.tick_params(labelsize=7)
        ax.set_title(f"{label}: {dev_label}", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"saved {path}")


panel(
    anneal_png,
    f"annealing p^10 (VP, {N} particles, {STEPS} steps; FKC zeta^2 = 3); red: exact target",
    anneal_rows,
    corners,
    0.4 / math.sqrt(10.0),
    lambda x: (np.abs(x) - 1.5).ravel(),
    "|x_i| - 1.5",
)
panel(
    product_png,
    f"product up x down (VP, {N} particles, {STEPS} steps); red: exact target",
    product_rows,
    np.array([[1.5, 0.0], [-1.5, 0.0]]),
    math.sqrt(0.08),
    lambda x: x[:, 1],
    "y",
)
