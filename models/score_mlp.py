"""A small MLP noise-prediction (epsilon) model, trained by denoising score matching.

Model. ``eps_theta(x, t) = MLP([c_in(t) x, emb(c_noise(t))])`` with ``c_in = 1/sqrt(alpha_t^2
sigma_data^2 + sigma_t^2)`` (Karras et al. 2022, Table 1), ``c_noise = log(sigma_t/alpha_t)`` and
a sinusoidal embedding ``emb(c) = [sin(w_i c), cos(w_i c)]`` with fixed geometric frequencies
(Vaswani et al. 2017; Song et al. 2021 use the same on the noise level). The score is
``s_theta = -eps_theta / sigma_t`` (:mod:`inference.diffusion.parametrisation`).

Loss (denoising score matching, Vincent 2011; Ho et al. 2020 eq. 14; Song et al. 2021 eq. 7
with weight ``lambda(t) = sigma_t^2``):

    L(theta) = E_{t ~ U[t_min, t_max], x_0 ~ data, eps ~ N(0, I)}
               || eps_theta(alpha_t x_0 + sigma_t eps, t) - eps ||^2.

Parameters are a plain pytree (dict of arrays); :func:`save`/:func:`load` use ``.npz`` with
``allow_pickle=False``. :func:`load_toy2d` returns the model shipped in
``models/data/toy2d_score.npz``, trained on :func:`toy2d_gmm` (8 Gaussians on a circle).

Shipped toy models (all VP, 128 x 3, ~150 KB, trained by :func:`train_toy` on :func:`toy_data`
with fixed seeds on CPU; regenerate with ``python -m models.score_mlp --train NAME``, equal up
to floating-point differences between platforms), loaded as :class:`ppl.DiffusionPrior` by
:func:`load_toy_prior`; :func:`toy_gmm` gives the mixture each was trained on:

* ``"circle"``: 8 Gaussians (std 0.25) on a circle of radius 2 (``toy2d_score.npz``);
* ``"four_modes"``: 4 Gaussians (std 0.4) at ``(+-1.5, +-1.5)`` (FKC Fig. 1, annealing);
* ``"up"`` / ``"down"``: 2 Gaussians (std 0.4) at ``(+-1.5, 1.5)`` / ``(+-1.5, -1.5)``
  (FKC Fig. 1, product of experts).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from inference import rng
from inference.diffusion.sde import EDMSDE, SDE, VESDE, VPSDE, SubVPSDE
from models.gmm import GaussianMixture

__all__ = [
    "init_params",
    "apply_eps",
    "make_score_fn",
    "dsm_loss",
    "train",
    "save",
    "load",
    "toy2d_gmm",
    "toy2d_data",
    "load_toy2d",
    "TOY2D_PATH",
    "TOY_MODELS",
    "toy_gmm",
    "toy_path",
    "toy_data",
    "train_toy",
    "load_toy_prior",
]

TOY2D_PATH = os.path.join(os.path.dirname(__file__), "data", "toy2d_score.npz")
_NUM_FREQ = 16


def _freqs(dtype=jnp.float32) -> Array:
    return jnp.exp(jnp.linspace(math.log(0.1), math.log(20.0), _NUM_FREQ)).astype(dtype)


def init_params(key: Array, dim: int, hidden: int = 128, depth: int = 3) -> dict:
    """Glorot-uniform weights for ``depth`` hidden layers of width ``hidden``."""
    sizes = [dim + 2 * _NUM_FREQ] + [hidden] * depth + [dim]
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for i, (k, m, n) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        lim = math.sqrt(6.0 / (m + n))
        scale = 1.0 if i < len(sizes) - 2 else 0.1
        params[f"w{i}"] = scale * rng.uniform(k, (m, n), jnp.float32, -lim, lim)
        params[f"b{i}"] = jnp.zeros((n,), jnp.float32)
    return params


def _num_layers(params: dict) -> int:
    return sum(1 for k in params if k.startswith("w"))


def apply_eps(params: dict, x: Array, t, sde: SDE, sigma_data: float = 1.0) -> Array:
    """``eps_theta(x, t)`` for ``x`` of shape ``(N, d)`` and scalar ``t`` in ``(0, t_max]``
    -> ``(N, d)`` (the noise embedding ``log(sigma_t / alpha_t)`` is ``-inf`` at ``t = 0``)."""
    a = sde.marginal_mean_coeff(t)
    s = sde.marginal_std(t)
    c_in = 1.0 / jnp.sqrt(a**2 * sigma_data**2 + s**2)
    c_noise = jnp.log(s / a)
    ang = c_noise * _freqs(x.dtype)
    emb = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)])
    h = jnp.concatenate([c_in * x, jnp.broadcast_to(emb, x.shape[:-1] + emb.shape)], axis=-1)
    L = _num_layers(params)
    for i in range(L):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < L - 1:
            h = jax.nn.silu(h)
    return h


def make_score_fn(params: dict, sde: SDE, sigma_data: float | None = None) -> Callable:
    """``score_fn(x, t) = -eps_theta(x, t) / sigma_t`` (batch convention ``(N, d) -> (N, d)``).

    ``sigma_data`` (the input scaling ``c_in``) defaults to the value :func:`train` stored in
    ``params``, which the network was trained with (1 for parameters that have none): another
    value feeds the network inputs on another scale, and it samples another law."""
    if sigma_data is None:
        sigma_data = float(params.get("sigma_data", 1.0))
    params = {k: v for k, v in params.items() if k != "sigma_data"}

    def score_fn(x, t):
        return -apply_eps(params, x, t, sde, sigma_data) / sde.marginal_std(t)

    return score_fn


def dsm_loss(params: dict, key: Array, x0: Array, sde: SDE, sigma_data: float = 1.0) -> Array:
    """Monte Carlo DSM loss on a minibatch ``x0`` (B, d); one ``t`` per example."""
    kt, ke = jax.random.split(key)
    b = x0.shape[0]
    t = jax.random.uniform(kt, (b,), x0.dtype, sde.t_min, sde.t_max)
    eps = rng.normal(ke, x0.shape, x0.dtype)
    a = sde.marginal_mean_coeff(t)[:, None]
    s = sde.marginal_std(t)[:, None]
    xt = a * x0 + s * eps
    pred = jax.vmap(lambda xi, ti: apply_eps(params, xi[None], ti, sde, sigma_data)[0])(xt, t)
    return jnp.mean(jnp.sum((pred - eps) ** 2, axis=-1))


def train(
    data: Array,
    sde: SDE,
    steps: int = 20_000,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    progress_bar: bool = True,
    hidden: int = 128,
    depth: int = 3,
    chunk: int = 500,
    sigma_data: float | None = None,
):
    """Train an epsilon-MLP on ``data`` (n, d) by DSM with Adam and cosine learning-rate decay.

    Runs ``steps`` optimiser steps in jitted chunks of ``chunk`` steps (one ``lax.scan`` each;
    a shorter last chunk when ``chunk`` does not divide ``steps``), with a tqdm bar. Each
    chunk draws its minibatches from its own key (split from ``seed``), so the same ``seed``
    *and* ``chunk`` give the same network; another ``chunk`` draws other minibatches (the
    shipped toy models were trained with the default 500).
    ``sigma_data`` defaults to the data's overall std. Returns ``(params, losses)`` with
    ``losses`` the per-step minibatch loss, shape ``(steps,)``; the parameter dict also stores
    ``sigma_data``. Interrupting (Ctrl-C) returns what was trained.
    """
    from ppl.validation import check_count, check_real, check_seed  # the MLP needs no ppl

    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (n, d) (one row per example); got {data.shape}")
    steps, batch_size, chunk = (
        check_count(name, value)
        for name, value in (("steps", steps), ("batch_size", batch_size), ("chunk", chunk))
    )
    hidden, depth = check_count("hidden", hidden), check_count("depth", depth)
    lr = check_real("lr", lr, 0.0, low_open=True)
    n, d = data.shape
    sd = (
        float(jnp.std(data))
        if sigma_data is None
        else check_real("sigma_data", sigma_data, 0.0, low_open=True)
    )
    key = check_seed(seed)
    key, kinit = jax.random.split(key)
    params = init_params(kinit, d, hidden, depth)
    sched = optax.cosine_decay_schedule(lr, steps, alpha=0.01)
    opt = optax.adam(sched)
    opt_state = opt.init(params)

    def one(carry, k):
        p, o = carry
        ki, kl = jax.random.split(k)
        idx = jax.random.randint(ki, (batch_size,), 0, n)
        loss, g = jax.value_and_grad(dsm_loss)(p, kl, data[idx], sde, sd)
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), o), loss

    @partial(jax.jit, static_argnums=3)
    def run_chunk(p, o, k, length):
        (p, o), losses = jax.lax.scan(one, (p, o), jax.random.split(k, length))
        return p, o, losses

    lengths = [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])
    losses = []
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="DSM training", unit="step")
    try:
        for length in lengths:
            key, k = jax.random.split(key)
            params, opt_state, l = run_chunk(params, opt_state, k, length)
            losses.append(np.asarray(l))
            if bar is not None:
                bar.update(length)
                bar.set_postfix(loss=f"{float(np.mean(losses[-1])):.4f}")
    except KeyboardInterrupt:
        pass
    finally:
        if bar is not None:
            bar.close()
    params = dict(params)
    params["sigma_data"] = jnp.asarray(sd, jnp.float32)
    loss_arr = np.concatenate(losses) if losses else np.zeros((0,))
    return params, jnp.asarray(loss_arr)


def _sde_to_arrays(sde: SDE) -> dict:
    name = {VPSDE: "vp", SubVPSDE: "subvp", VESDE: "ve", EDMSDE: "edm"}[type(sde)]
    fields = {k: float(v) for k, v in vars(sde).items()}
    out = {"sde_name": np.array(name)}
    for k, v in fields.items():
        out[f"sde_{k}"] = np.array(v)
    return out


def _sde_from_arrays(arrs) -> SDE:
    cls = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE, "edm": EDMSDE}[str(arrs["sde_name"])]
    kwargs = {k[4:]: float(arrs[k]) for k in arrs if k.startswith("sde_") and k != "sde_name"}
    return cls(**kwargs)


def _npz_path(path) -> str:
    """``path`` with the ``.npz`` suffix that ``np.savez`` adds when it is missing."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def save(path: str, params: dict, sde: SDE | None = None) -> None:
    """Save a parameter dict (and optionally its SDE) to ``.npz`` (no pickles); ``.npz`` is
    added to a ``path`` without it, as :func:`load` expects."""
    arrays = {f"param_{k}": np.asarray(v) for k, v in params.items()}
    if sde is not None:
        arrays.update(_sde_to_arrays(sde))
    np.savez(_npz_path(path), **arrays)


def load(path: str, return_sde: bool = False):
    """Load parameters saved by :func:`save` (``allow_pickle=False``; ``.npz`` is added to a
    ``path`` without it); with ``return_sde`` also the stored SDE (or None)."""
    with np.load(_npz_path(path), allow_pickle=False) as f:
        params = {k[6:]: jnp.asarray(f[k]) for k in f.files if k.startswith("param_")}
        sde = _sde_from_arrays({k: f[k] for k in f.files}) if "sde_name" in f.files else None
    return (params, sde) if return_sde else params


def toy2d_gmm(radius: float = 2.0, std: float = 0.25, k: int = 8) -> GaussianMixture:
    """``k`` equal-weight isotropic Gaussians (std ``std``) evenly spaced on a circle."""
    ang = 2.0 * jnp.pi * jnp.arange(k) / k
    means = radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=-1)
    return GaussianMixture(jnp.ones(k) / k, means, jnp.full((k,), std**2))


def toy2d_data(n: int = 20_000, seed: int = 0) -> Array:
    """``n`` draws from :func:`toy2d_gmm`, deterministic given ``seed``; shape ``(n, 2)``."""
    return toy2d_gmm().sample(jax.random.PRNGKey(seed), n)


def load_toy2d(path: str | None = None):
    """The shipped toy model: ``(score_fn, sde)`` with ``score_fn(x (N, 2), t) -> (N, 2)``."""
    params, sde = load(TOY2D_PATH if path is None else path, return_sde=True)
    return make_score_fn(params, sde), sde


TOY_MODELS = ("circle", "four_modes", "up", "down")
_CORNERS = ((1.5, 1.5), (-1.5, 1.5), (1.5, -1.5), (-1.5, -1.5))
_TOY_CORNERS = {"four_modes": _CORNERS, "up": _CORNERS[:2], "down": _CORNERS[2:]}


def _check_toy(name: str) -> None:
    if name not in TOY_MODELS:
        raise ValueError(f"toy model must be one of {TOY_MODELS}, got {name!r}")


def toy_gmm(name: str) -> GaussianMixture:
    """The mixture the shipped toy model ``name`` (one of :data:`TOY_MODELS`) was trained on."""
    _check_toy(name)
    if name == "circle":
        return toy2d_gmm()
    means = jnp.asarray(_TOY_CORNERS[name], jnp.float32)
    k = means.shape[0]
    return GaussianMixture(jnp.ones(k) / k, means, jnp.full((k,), 0.4**2))


def toy_path(name: str) -> str:
    """File of the shipped toy model ``name`` in ``models/data``."""
    _check_toy(name)
    fname = "toy2d_score.npz" if name == "circle" else f"toy2d_{name}_score.npz"
    return os.path.join(os.path.dirname(__file__), "data", fname)


def toy_data(name: str, n: int = 20_000, seed: int = 0) -> Array:
    """Training data of the shipped toy model ``name``, deterministic given ``seed``.

    ``"circle"``: :func:`toy2d_data`. The others: ``n`` draws of :func:`toy_gmm` made exactly
    symmetric by adding their mirror images (``x -> -x``, and for ``"four_modes"`` also
    ``y -> -y``), so the data's mode masses and shapes are equal (an annealed ``p^10`` raises
    mass ratios to the 10th power); shape ``(2 n, 2)`` or ``(4 n, 2)``.
    """
    if name == "circle":
        return toy2d_data(n, seed)
    x = toy_gmm(name).sample(jax.random.PRNGKey(seed), n)
    flips = [(1.0, 1.0), (-1.0, 1.0)]
    if name == "four_modes":
        flips += [(1.0, -1.0), (-1.0, -1.0)]
    return jnp.concatenate([x * jnp.asarray(f, x.dtype) for f in flips])


def train_toy(
    name: str,
    path: str | None = None,
    steps: int | None = None,
    progress_bar: bool = True,
):
    """Regenerate the shipped toy model ``name``: :func:`train` on :func:`toy_data` (seed 0)
    with the VP SDE, 128 x 3, batch 512, lr 2e-3, seed 0, 10,000 steps (``"circle"``) or
    20,000 (the others, as the FKC paper's toys); saved to ``path`` (default
    :func:`toy_path`). Returns ``(params, losses)``."""
    _check_toy(name)
    if steps is None:
        steps = 10_000 if name == "circle" else 20_000
    sde = VPSDE()
    params, losses = train(
        toy_data(name), sde, steps=steps, batch_size=512, lr=2e-3, seed=0, progress_bar=progress_bar
    )
    path = toy_path(name) if path is None else path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save(path, params, sde)
    return params, losses


def load_toy_prior(name: str = "circle", **kwargs):
    """The shipped toy model ``name`` (``"circle"``, ``"four_modes"``, ``"up"``, ``"down"``) as a
    :class:`ppl.DiffusionPrior` (``kwargs`` go to its constructor: ``steps``, ``sampler``...)."""
    from ppl.diffusion import DiffusionPrior  # imported on use: the MLP itself needs no ppl

    score_fn, sde = load_toy2d(toy_path(name))
    return DiffusionPrior(score_fn, sde, event_shape=(2,), **kwargs)


if __name__ == "__main__":  # pragma: no cover - training script for the shipped weights
    import argparse
    import time

    parser = argparse.ArgumentParser(description="retrain a shipped toy score model")
    parser.add_argument("--train", choices=TOY_MODELS, default="circle")
    parser.add_argument("--out", default=None, help="output .npz (default: models/data)")
    args = parser.parse_args()
    t0 = time.time()
    params, losses = train_toy(args.train, args.out)
    print(f"trained in {time.time() - t0:.1f}s, final loss {float(jnp.mean(losses[-1000:])):.4f}")
