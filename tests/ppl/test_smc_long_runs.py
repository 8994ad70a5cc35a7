"""Long SMC runs: chunking, Ctrl-C, checkpoints and compiled-code reuse (tempered SMC and the
diffusion-time samplers, all run by :mod:`ppl.smc_driver`)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ppl
import ppl.smc_driver as driver_module
from inference.smc import engine

RNG = np.random.default_rng(11)
X = RNG.normal(size=(15, 2))
Y = X @ np.array([0.5, -1.0]) + 0.5 * RNG.normal(size=15)
SMC_KWARGS = dict(particles=200, runs=2, seed=4, num_mcmc_steps=3)


def regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(jnp.asarray(X) @ w, 0.5), obs=y)


def interrupting_bar(after: int):
    """A tqdm whose ``update`` raises KeyboardInterrupt at its ``after + 1``-th real call."""

    class InterruptingBar(driver_module.tqdm):
        calls = 0

        def update(self, n=1):
            if n:
                InterruptingBar.calls += 1
                if InterruptingBar.calls > after:
                    raise KeyboardInterrupt
            return super().update(n)

    return InterruptingBar


@pytest.fixture(scope="module")
def reference():
    return ppl.smc(regression, X, y=Y, progress_bar=False, **SMC_KWARGS)


def test_numbers_do_not_depend_on_the_chunk_size(reference):
    chunked = ppl.smc(regression, X, y=Y, progress_bar=False, chunk_size=3, **SMC_KWARGS)
    np.testing.assert_array_equal(chunked.samples["w"], reference.samples["w"])
    assert chunked.log_evidence == reference.log_evidence
    np.testing.assert_array_equal(chunked.stages["temperature"], reference.stages["temperature"])


def test_keyboard_interrupt_returns_the_completed_stages(monkeypatch, reference):
    # The bar is updated after a chunk completes: the third stage is done when it raises.
    monkeypatch.setattr(driver_module, "tqdm", interrupting_bar(after=2))
    with pytest.warns(UserWarning, match="interrupted after 3 stage"):
        post = ppl.smc(regression, X, y=Y, **SMC_KWARGS)
    assert post.partial
    assert post.stages["temperature"].shape[1] == 3
    assert np.all(post.stages["temperature"][:, -1] < 1.0)
    np.testing.assert_array_equal(
        post.stages["temperature"], reference.stages["temperature"][:, :3]
    )


def test_checkpoint_resume_gives_the_uninterrupted_run(monkeypatch, tmp_path, reference):
    path = str(tmp_path / "smc.npz")
    monkeypatch.setattr(driver_module, "tqdm", interrupting_bar(after=1))
    with pytest.warns(UserWarning, match="interrupted"):
        partial = ppl.smc(regression, X, y=Y, checkpoint=path, **SMC_KWARGS)
    assert partial.partial
    monkeypatch.undo()
    resumed = ppl.smc(regression, X, y=Y, checkpoint=path, progress_bar=False, **SMC_KWARGS)
    assert not resumed.partial
    np.testing.assert_array_equal(resumed.samples["w"], reference.samples["w"])
    assert resumed.log_evidence == reference.log_evidence
    with pytest.raises(ValueError, match="written with other settings"):
        ppl.smc(
            regression, X, y=Y, checkpoint=path, progress_bar=False, **{**SMC_KWARGS, "seed": 5}
        )
    with pytest.raises(ValueError, match="written with other settings"):  # a key as the seed
        ppl.smc(
            regression,
            X,
            y=Y,
            checkpoint=path,
            progress_bar=False,
            **{**SMC_KWARGS, "seed": jax.random.PRNGKey(4)},
        )
    with pytest.raises(ValueError, match="written for other inputs"):
        ppl.smc(regression, X, y=Y + 1.0, checkpoint=path, progress_bar=False, **SMC_KWARGS)


def test_a_second_call_reuses_the_compiled_program(reference):
    before = len(driver_module._COMPILED)
    again = ppl.smc(regression, X, y=Y, progress_bar=False, **{**SMC_KWARGS, "seed": 9})
    assert len(driver_module._COMPILED) == before
    assert not np.array_equal(again.samples["w"], reference.samples["w"])


def _random_walk_program(num_steps, resample_every=1):
    """A toy Feynman-Kac model: Gaussian random walk with potential N(x; 0, 1)."""

    def init(key, n):
        return jax.random.normal(key, (n,)), jnp.zeros(n)

    def step(key, x, t):
        x = x + 0.3 * jax.random.normal(key, x.shape)
        return x, -0.5 * x**2, ()

    return engine.Program(
        engine.FeynmanKac(init, step), num_steps, ess_threshold=0.5, resample_every=resample_every
    )


# several padded chunks; one whole chunk; chunks rounded up to whole blocks of 3 decisions
@pytest.mark.parametrize("chunk,every", [(3, 1), (10, 1), (4, 3)])
def test_driver_matches_one_scan_for_any_chunk_size(chunk, every):
    program = _random_walk_program(10, every)
    key = jax.random.PRNGKey(2)
    one_scan = engine.run_program(key, program, 64)
    driven = driver_module.drive_one(program, key, 64, progress=False, chunk_size=chunk)
    assert driven.steps_done == 10 and not driven.interrupted
    np.testing.assert_array_equal(driven.result.particles, one_scan.particles)
    np.testing.assert_array_equal(driven.result.ancestors, one_scan.ancestors)
    np.testing.assert_allclose(driven.result.log_evidence, one_scan.log_evidence, rtol=0, atol=0)
    np.testing.assert_array_equal(driven.result.resampled, one_scan.resampled)
    if every > 1:
        assert not np.any(one_scan.resampled[np.arange(10) % every != 0])


@pytest.fixture(scope="module")
def annealed():
    """``p^3`` for a two-mode exact prior; one object, so its compiled FKC chunks are reused."""
    from inference.diffusion.sde import VPSDE
    from models import gmm_targets
    from models.gmm import GaussianMixture

    gmm = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.5], [1.5]]), jnp.full((2,), 0.16))
    return ppl.anneal(gmm_targets.exact_prior(gmm, VPSDE()), 3.0)


FKC_KWARGS = dict(num_samples=128, steps=20, seed=1)


def test_fkc_numbers_do_not_depend_on_the_chunk_size(annealed):
    whole = ppl.sample_diffusion(annealed, progress_bar=False, **FKC_KWARGS)
    chunked = ppl.sample_diffusion(annealed, progress_bar=False, chunk_size=6, **FKC_KWARGS)
    np.testing.assert_array_equal(chunked.samples, whole.samples)
    assert chunked.log_normalizer == whole.log_normalizer and not chunked.partial


def test_fkc_keyboard_interrupt_returns_the_particles_so_far(monkeypatch, annealed):
    monkeypatch.setattr(driver_module, "tqdm", interrupting_bar(after=1))
    with pytest.warns(UserWarning, match="FKC interrupted after 12 of 20 steps"):
        res = ppl.sample_diffusion(annealed, chunk_size=6, **FKC_KWARGS)
    assert res.partial and res.samples.shape == (128, 1)
    assert np.all(np.isfinite(res.samples))


@pytest.fixture(scope="module")
def two_mode_prior():
    from inference.diffusion.sde import VPSDE
    from models.gmm import GaussianMixture

    means = jnp.array([[-1.5, 0.0], [1.5, 0.0]])
    return GaussianMixture(jnp.array([0.5, 0.5]), means, jnp.full((2,), 0.16)).diffusion_prior(
        VPSDE()
    )


@pytest.mark.parametrize("method", ["em", "pc", "ddim"])
def test_plain_sampling_numbers_do_not_depend_on_the_chunk_size(two_mode_prior, method):
    kwargs = dict(num_samples=64, steps=30, seed=2, method=method)
    whole = ppl.sample_diffusion(two_mode_prior, progress_bar=False, **kwargs)
    chunked = ppl.sample_diffusion(two_mode_prior, progress_bar=False, chunk_size=7, **kwargs)
    np.testing.assert_array_equal(chunked.samples, whole.samples)
    assert not chunked.partial


def test_plain_sampling_keyboard_interrupt_returns_the_particles_so_far(
    monkeypatch, two_mode_prior
):
    import ppl.diffusion as diffusion_module

    class InterruptingBar(diffusion_module.tqdm):
        def update(self, n=1):
            if self.n >= 10:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(diffusion_module, "tqdm", InterruptingBar)
    with pytest.warns(UserWarning, match="interrupted after 15 of 30 steps"):
        res = ppl.sample_diffusion(two_mode_prior, 64, steps=30, seed=2, chunk_size=5)
    assert res.partial and np.all(np.isfinite(res.samples))
