"""Kernel configuration objects: validation, hashing, get_kernel."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from inference.mcmc import HMC, MALA, NUTS, RWMH, get_kernel


def test_defaults_and_names():
    assert (NUTS().name, NUTS().target_accept, NUTS().dense_mass) == ("nuts", 0.8, False)
    assert NUTS().max_tree_depth == 10
    assert (HMC().name, HMC().num_steps, HMC().path_length, HMC().target_accept) == (
        "hmc",
        10,
        None,
        0.8,
    )
    assert (MALA().name, MALA().target_accept) == ("mala", 0.574)
    assert (RWMH().name, RWMH().target_accept) == ("rwmh", 0.234)


def test_objects_are_frozen_and_hashable():
    k = NUTS(target_accept=0.9, dense_mass=True)
    assert hash(k) == hash(NUTS(target_accept=0.9, dense_mass=True))
    assert k == NUTS(target_accept=0.9, dense_mass=True) and k != NUTS()
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.target_accept = 0.5
    assert len({NUTS(), NUTS(), HMC(), MALA(), RWMH()}) == 4


@pytest.mark.parametrize("cls", [NUTS, HMC, MALA, RWMH])
@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, "0.8", None, True])
def test_target_accept_validation(cls, bad):
    with pytest.raises(ValueError, match=r"target_accept must be a number in the open interval"):
        cls(target_accept=bad)


@pytest.mark.parametrize("cls", [NUTS, HMC, MALA, RWMH])
def test_dense_mass_validation(cls):
    with pytest.raises(ValueError, match="dense_mass must be True or False"):
        cls(dense_mass="yes")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, 31])
def test_max_tree_depth_validation(bad):
    with pytest.raises(ValueError, match="max_tree_depth must be"):
        NUTS(max_tree_depth=bad)


def test_hmc_validation():
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        HMC(num_steps=0)
    with pytest.raises(ValueError, match="path_length must be a positive finite number"):
        HMC(path_length=-1.0)
    with pytest.raises(ValueError, match="either num_steps or path_length"):
        HMC(num_steps=5, path_length=2.0)
    with pytest.raises(ValueError, match="step_size_jitter must be"):
        HMC(step_size_jitter=1.0)
    assert HMC(path_length=2.0).num_steps is None
    assert int(HMC(path_length=2.0).num_integration_steps(0.3)) == 7  # ceil(2 / 0.3)
    assert int(HMC(path_length=2.0, max_num_steps=5).num_integration_steps(0.01)) == 5


def test_get_kernel():
    assert get_kernel("nuts") == NUTS()
    assert get_kernel("NUTS", target_accept=0.9) == NUTS(target_accept=0.9)
    assert get_kernel("Hmc", num_steps=5) == HMC(num_steps=5)
    assert get_kernel("mala") == MALA() and get_kernel("rwmh") == RWMH()
    k = NUTS(dense_mass=True)
    assert get_kernel(k) is k
    assert get_kernel(k, target_accept=0.95) == NUTS(dense_mass=True, target_accept=0.95)
    assert get_kernel(HMC(), path_length=1.5) == HMC(path_length=1.5)
    with pytest.raises(ValueError, match=r"unknown kernel 'foo': expected one of 'nuts', 'hmc'"):
        get_kernel("foo")
    with pytest.raises(TypeError, match="unknown option 'max_tree_depth' for kernel 'hmc'"):
        get_kernel("hmc", max_tree_depth=3)
    with pytest.raises(TypeError, match="unknown option 'bogus'"):
        get_kernel(NUTS(), bogus=1)
    with pytest.raises(TypeError, match="kernel must be a name"):
        get_kernel(3)
    with pytest.raises(ValueError, match="target_accept"):
        get_kernel("nuts", target_accept=2.0)


def test_kernel_objects_are_static_jit_arguments():
    def logdensity(x):
        return -0.5 * jnp.sum(x**2)

    def one_step(kernel, key):
        state = kernel.init(jnp.zeros(2), logdensity)
        return kernel.step(key, state, logdensity, 0.5, jnp.ones(2))

    step = jax.jit(one_step, static_argnums=0)
    for kernel in (RWMH(), MALA(), HMC(num_steps=2), HMC(path_length=1.0)):
        state, info = step(kernel, jax.random.key(0))
        assert state.position.shape == (2,) and info.acceptance_rate.shape == ()
