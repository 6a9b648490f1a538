"""Device mesh and shardings: the same config runs on 1 CPU, 8 fake CPUs, a GPU node or a pod.

Mesh axes are ``("fsdp", "tp")``, the names Tunix's Gemma3 sharding annotations use.
Parameters are placed by those annotations (axes that do not divide a dimension are dropped
for that dimension, so tiny test models still shard); batches are split along ``fsdp``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from cotune.config import ConfigError, MeshCfg

_DIST_ENV = ("JAX_COORDINATOR_ADDRESS", "COTUNE_DISTRIBUTED")
_initialized = False


def maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when running on several hosts (TPU pod, Slurm, ...).

    Triggered by ``JAX_COORDINATOR_ADDRESS`` (explicit cluster) or ``COTUNE_DISTRIBUTED=1``
    (let JAX auto-detect: TPU pods, Slurm, Open MPI). Must run before any other JAX call.
    """
    global _initialized
    if _initialized or not any(os.environ.get(k) for k in _DIST_ENV):
        return
    jax.distributed.initialize()
    _initialized = True


def check_mesh(
    cfg: MeshCfg, batch_size: int | None = None, n_devices: int | None = None
) -> tuple[int, int]:
    """``(fsdp, tp)`` for this machine, or a :class:`ConfigError` naming the key, before any
    compute: the mesh must fit the devices and ``train.batch_size`` rows must split over fsdp."""
    n = jax.device_count() if n_devices is None else n_devices
    tp = cfg.tp
    if tp > n:
        raise ConfigError(f"mesh.tp: {tp} devices requested, but this machine has {n} device(s)")
    fsdp = cfg.fsdp if cfg.fsdp is not None else max(1, n // tp)
    if fsdp * tp > n:
        raise ConfigError(
            f"mesh.fsdp x mesh.tp: {fsdp} x {tp} = {fsdp * tp} devices, but this machine has "
            f"{n} device(s); lower mesh.fsdp/mesh.tp (or leave mesh.fsdp unset to use all)"
        )
    if batch_size is not None and batch_size % fsdp:
        raise ConfigError(
            f"train.batch_size: {batch_size} rows cannot be split evenly over mesh.fsdp={fsdp} "
            "devices; use a multiple of it"
        )
    return fsdp, tp


def make_mesh(cfg: MeshCfg) -> jax.sharding.Mesh:
    """An ``(fsdp, tp)`` mesh; ``fsdp=None`` takes every device not used by ``tp``."""
    fsdp, tp = check_mesh(cfg)
    # Explicit axis types break Tunix's embedding gather (see the shared notes): use Auto.
    return jax.make_mesh(
        (fsdp, tp),
        ("fsdp", "tp"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=jax.devices()[: fsdp * tp],
    )


def _spec_for(names: Any, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> PartitionSpec:
    if not names:
        return PartitionSpec()
    out = []
    for i, dim in enumerate(shape):
        ax = names[i] if i < len(names) else None
        if ax is not None and (ax not in mesh.shape or dim % mesh.shape[ax] != 0):
            ax = None
        out.append(ax)
    return PartitionSpec(*out)


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh) -> Any:
    """NamedShardings for an NNX state, from each variable's sharding annotation."""

    def one(var: Any) -> NamedSharding:
        md = var.get_metadata() if hasattr(var, "get_metadata") else {}
        names = md.get("out_sharding") or md.get("sharding") or md.get("sharding_names")
        return NamedSharding(mesh, _spec_for(names, tuple(var[...].shape), mesh))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: nnx.State, mesh: jax.sharding.Mesh) -> nnx.State:
    shardings = state_shardings(state, mesh)
    return jax.tree.map(
        lambda v, s: v.replace(jax.device_put(v[...], s)),
        state,
        shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """``[A, B, ...]`` step arrays: rows (axis 1) along fsdp; ``[A, K]`` ones replicated."""
    if ndim >= 3:
        return NamedSharding(mesh, PartitionSpec(None, "fsdp"))
    return NamedSharding(mesh, PartitionSpec())


def put_batch(arrays: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Place one step's arrays; on several hosts each contributes its slice of the rows."""
    out = {}
    for k, v in arrays.items():
        sh = batch_sharding(mesh, v.ndim)
        if jax.process_count() == 1:
            out[k] = jax.device_put(v, sh)
        else:
            if v.ndim >= 3:
                per = v.shape[1] // jax.process_count()
                i = jax.process_index()
                local = v[:, i * per : (i + 1) * per]
            else:
                local = v
            out[k] = jax.make_array_from_process_local_data(sh, local, v.shape)
    return out
