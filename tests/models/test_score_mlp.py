"""Score MLP: save/load round trip, DSM training reduces the loss, and the shipped toy model
samples its data distribution (energy distance vs the exact-vs-exact null)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.metrics import energy_distance, energy_distance_null
from inference.diffusion.samplers import sample
from inference.diffusion.sde import VESDE, VPSDE
from models import score_mlp as M


def test_save_load_round_trip(tmp_path):
    sde = VESDE(sigma_max=10.0)
    params = M.init_params(jax.random.PRNGKey(0), 3, hidden=16, depth=2)
    path = str(tmp_path / "m.npz")
    M.save(path, params, sde)
    loaded, sde2 = M.load(path, return_sde=True)
    assert sde2 == sde
    assert set(loaded) == set(params)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    s1 = M.make_score_fn(params, sde)(x, 0.3)
    s2 = M.make_score_fn(loaded, sde2)(x, 0.3)
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)


def test_training_reduces_loss():
    data = M.toy2d_data(2000, seed=1)
    params, losses = M.train(
        data,
        VPSDE(),
        steps=300,
        batch_size=128,
        lr=2e-3,
        seed=0,
        progress_bar=False,
        hidden=32,
        depth=2,
        chunk=100,
    )
    assert losses.shape == (300,)
    # the DSM loss starts near d = 2 (E|eps|^2) and must drop clearly below it
    assert float(losses[:50].mean()) > 1.2 and float(losses[-100:].mean()) < 1.0


def test_train_runs_exactly_the_steps_asked_for():
    """Adam moves each parameter by at most the learning rate per step (its first step by
    lr * |g| / (|g| + eps)): ``steps=1`` in chunks of 500 used to run 500 steps."""
    data = M.toy2d_data(500, seed=1)
    options = dict(batch_size=32, lr=1e-3, seed=0, progress_bar=False, hidden=8, depth=1)
    initial = M.init_params(jax.random.split(jax.random.PRNGKey(0))[1], 2, hidden=8, depth=1)
    for steps, chunk in ((1, 500), (7, 5)):
        params, losses = M.train(data, VPSDE(), steps=steps, chunk=chunk, **options)
        assert losses.shape == (steps,)
        moved = max(float(jnp.max(jnp.abs(params[k] - initial[k]))) for k in initial)
        assert 0 < moved <= steps * 1e-3 * (1 + 1e-4), (steps, moved)
    assert float(params["sigma_data"]) == float(jnp.std(jnp.asarray(data, jnp.float32)))


def test_the_score_uses_the_sigma_data_the_network_was_trained_with(tmp_path):
    """``make_score_fn`` reads the ``sigma_data`` that ``train`` stores (it used to take 1:
    a model trained on data of sd 2.9 then sampled modes of sd 0.23 instead of 0.5)."""
    sde = VPSDE()
    params = M.init_params(jax.random.PRNGKey(0), 2, hidden=8, depth=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    stored = {**params, "sigma_data": jnp.float32(3.0)}
    expected = M.make_score_fn(params, sde, sigma_data=3.0)(x, 0.3)
    np.testing.assert_array_equal(M.make_score_fn(stored, sde)(x, 0.3), expected)
    assert not np.allclose(M.make_score_fn(params, sde)(x, 0.3), expected)
    M.save(tmp_path / "model", stored, sde)  # .npz added, as np.savez does, and found by load
    reloaded = M.load(tmp_path / "model")
    np.testing.assert_array_equal(M.make_score_fn(reloaded, sde)(x, 0.3), expected)


def test_toy_data_deterministic():
    np.testing.assert_array_equal(M.toy2d_data(100, 3), M.toy2d_data(100, 3))


def test_shipped_toy_model_samples_data_distribution():
    score_fn, sde = M.load_toy2d()
    assert isinstance(sde, VPSDE)
    gmm = M.toy2d_gmm()
    n = 2000
    x = jax.jit(lambda k: sample(k, score_fn, sde, n, 2, steps=500, method="euler_maruyama"))(
        jax.random.PRNGKey(0)
    )
    ed = float(energy_distance(x, gmm.sample(jax.random.PRNGKey(1), n)))
    draw = jax.jit(lambda k, m: gmm.sample(k, m), static_argnums=1)
    null = np.asarray(energy_distance_null(draw, n, 30, jax.random.PRNGKey(2)))
    med, q95 = float(np.median(null)), float(np.quantile(null, 0.95))
    bound = med + 3.0 * (q95 - med)  # same rule as tests/inference/diffusion
    print(f"toy2d MLP: D^2 = {ed:.2e}; null median {med:.2e}, q95 {q95:.2e}, bound {bound:.2e}")
    assert ed < bound
    # reloading gives identical scores
    score_fn2, _ = M.load_toy2d()
    np.testing.assert_array_equal(
        np.asarray(score_fn(x[:8], 0.5)), np.asarray(score_fn2(x[:8], 0.5))
    )
    assert jnp.all(jnp.isfinite(x))


def test_train_refuses_bad_arguments_by_name():
    sde = VPSDE()
    data = jnp.zeros((10, 2))
    for kwargs, match in [
        ({"data": jnp.zeros(10)}, r"data must have shape \(n, d\)"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"chunk": 0}, "chunk must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be > 0"),
    ]:
        args = {"data": data, "steps": 5, "progress_bar": False, **kwargs}
        with pytest.raises((TypeError, ValueError), match=match):
            M.train(args.pop("data"), sde, **args)
