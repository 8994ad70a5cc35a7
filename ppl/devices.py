"""Placing the chain / particle axis across local devices with ``jax.sharding``.

Arrays whose leading axis indexes chains (MCMC) or independent runs and particles (SMC) are
laid out over a one-dimensional device mesh; the jitted programs then run partitioned by XLA's
SPMD partitioner (each device steps its own chains; a resampling gather becomes a collective).
The random keys of every chain are derived the same way whatever the layout, so one device and
several give the same numbers.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def select_devices(devices, size: int, what: str) -> list:
    """The devices to spread ``size`` rows of ``what`` over.

    ``devices=None`` takes every local device when ``size`` is divisible by their number (else
    one device); an int takes the first that many local devices; a list is used as given.
    """
    local = jax.local_devices()
    if devices is None:
        chosen = local if size % len(local) == 0 else local[:1]
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"devices={devices}: expected an integer between 1 and the {len(local)} local "
                "device(s)"
            )
        chosen = local[:devices]
    elif isinstance(devices, (list, tuple)) and devices:
        chosen = list(devices)
        wrong = [d for d in chosen if not isinstance(d, jax.Device)]
        if wrong:
            raise TypeError(
                f"devices must hold jax devices (from jax.devices()), got {wrong[0]!r}; pass an "
                "int to take the first that many local devices"
            )
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices lists a device more than once: {chosen}")
    else:
        raise TypeError(f"devices must be None, an int or a list of jax devices, got {devices!r}")
    if size % len(chosen):
        raise ValueError(
            f"{what}={size} must be divisible by the number of devices ({len(chosen)}) to "
            "shard them evenly"
        )
    return chosen


def shard_leading(tree, devices: list):
    """Place every leaf with its leading axis split over ``devices`` (no-op for one device)."""
    if len(devices) == 1:
        return jax.device_put(tree, devices[0])
    mesh = Mesh(np.asarray(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    return jax.device_put(tree, sharding)


def particle_sharding(devices: list):
    """Sharding of a ``(runs, particles, ...)`` array: the particle axis over ``devices``."""
    if len(devices) == 1:
        return jax.sharding.SingleDeviceSharding(devices[0])
    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec(None, "batch"))
