"""The Ray Data graph: decode in parallel CPU tasks, encode in an actor pool (or both fused).

```
from_items(ids not yet in the store, plan.clips_per_task per block)
  .flat_map(decode_parts)        CPU tasks (plan.decode_cpus each, as many codec threads): PyAV
                                 frames at --fps, resized for the video encoder, in parts of
                                 plan.chunk_seconds; 16 kHz mono audio from audio/<id>.mp3 or the
                                 mp4; text/<id>.txt when no transcriber runs (decode_stage.py)
  .map_batches(EncodeBatch)      ActorPoolStrategy(size=actors); each actor loads the plan's
                                 encoders once (num_gpus=1 only if the cluster has GPUs)
  .iter_rows()                   on the driver: Parts joins a clip's parts, StoreWriter.add per clip
```
When every encoder is weight-free (the lite preset; `Plan.fuse` overrides), decoding and
encoding are fused into one stage instead: `.map_batches(decode_encode)` CPU tasks
(decode_cpus + encoder_cpus each, one codec thread per CPU) that decode a block and encode it
in the same process (encoders built once per worker process, numpy only). The encoders cost a
few ms a clip, less than shipping frames to an actor, and no actor has to start.

Nothing is materialised: Ray Data's streaming executor and its backpressure bound what is
in flight (decoded blocks in the object store are capped at `plan.inflight_mb`), so memory
stays flat at any dataset size; `--max-seconds` caps very long clips. Inputs and model paths
must be readable at the same paths on every node of a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, DataContext, ExecutionResources

from emi_ray.errors import InputError
from emi_ray.extract.decode_stage import decode_kwargs, decode_parts
from emi_ray.extract.encode_stage import EncodeBatch, encoded_groups, encoder_choices
from emi_ray.extract.encoders import encoder_info
from emi_ray.extract.presets import Plan


def fused(plan: Plan) -> bool:
    """Whether decode and encode run in the same tasks: `plan.fuse`, or by default when every
    encoder is weight-free (numpy only, a few ms a clip)."""
    if plan.fuse is not None:
        return plan.fuse
    return all(encoder_info(c.name).path is None for c in plan.choices().values())


def fused_blocks(n_items: int, plan: Plan, cluster_cpus: float) -> int:
    """Blocks (tasks) for the fused plan: about plan.clips_per_task clips each, rounded up to a
    whole number of rounds over the cluster's task slots, so no lone task runs at the end."""
    slots = max(1, int(cluster_cpus // (plan.decode_cpus + plan.encoder_cpus)))
    blocks = -(-n_items // plan.clips_per_task)
    return max(1, min(n_items, -(-blocks // slots) * slots))


def plan_resources(plan: Plan, actors: int, cluster_cpus: float) -> tuple[float, float]:
    """(CPUs per decode task, CPUs per encoder actor) as asked to Ray; refuses plans that cannot run.

    Equal requests would make Ray Data fuse decoding into the encoder actors (no separate CPU
    tasks), so the decode request is nudged down a hair. The actors plus one decode task must
    fit the cluster, or the pipeline would wait forever for a decode slot."""
    decode, encoder = plan.decode_cpus, plan.encoder_cpus
    if abs(decode - encoder) < 1e-3:
        decode = max(decode - 1e-3, 1e-3)
    need = actors * encoder + decode
    if need > cluster_cpus + 1e-9:
        raise InputError(
            f"{actors} encoder actor(s) x {encoder:g} CPU + one decode task x {decode:g} CPU = {need:g} CPUs, "
            f"but the Ray cluster has {cluster_cpus:g}; lower --actors (or join a bigger cluster with --address)")
    return decode, encoder


_FUSED: dict[str, EncodeBatch] = {}  # per worker process: encoders load once, not per task


def decode_encode(batch: dict[str, np.ndarray], *, choices: dict[str, dict[str, Any]], threads: int,
                  decode: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Decode and encode a batch of work items in one Ray task (the fused pipeline: for cheap,
    weight-free encoders, moving frames between processes costs more than encoding them).
    Encodes as the parts come, about one chunk of frames at a time: a long clip is never whole."""
    key = json.dumps(choices, sort_keys=True)
    enc = _FUSED.get(key)
    if enc is None:
        enc = _FUSED[key] = EncodeBatch(choices, threads=threads)
    cols = list(batch)
    rows = (r for i in range(len(batch["id"])) for r in decode_parts({c: batch[c][i] for c in cols}, **decode))
    yield from encoded_groups(rows, enc, len(batch["id"]), decode["chunk_frames"])


def _context(plan: Plan, fuse: bool) -> None:
    """Ray Data's execution settings for this pipeline."""
    ctx = DataContext.get_current()
    ctx.print_on_execution_start = False
    if plan.inflight_mb:  # decoded frames are big: cap what waits in the object store
        ctx.execution_options.resource_limits = ExecutionResources.for_limits(
            object_store_memory=plan.inflight_mb * 2**20)
    # Ray Data's per-operator resource reservation (ReservationOpResourceAllocator) admitted
    # the fused 1-CPU tasks one at a time on a 2-CPU cluster (measured: 13 tasks ran in series);
    # a single map stage has no other stage to reserve against. Two stages keep Ray's default.
    ctx.op_resource_reservation_enabled = not fuse


def build_dataset(items: list[dict[str, Any]], plan: Plan, size: int | None):
    """The lazy Ray Data pipeline (decode tasks -> encoder actor pool, or fused decode+encode
    tasks, see `fused`); iterate it to run."""
    fuse = fused(plan)
    _context(plan, fuse)
    resources = ray.cluster_resources()
    gpus, cluster_cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    actors = plan.actors or (max(1, int(gpus)) if gpus else 1)
    choices = encoder_choices(plan)
    if fuse:  # one task decodes and encodes its block; codec threads = CPUs it asked for
        cpus = plan.decode_cpus + plan.encoder_cpus
        if cpus > cluster_cpus + 1e-9:
            raise InputError(f"a decode+encode task asks {cpus:g} CPUs (--decode-cpus + --encoder-cpus), but the "
                             f"Ray cluster has {cluster_cpus:g}")
        threads = max(1, round(cpus))
        ds = ray.data.from_items(items, override_num_blocks=fused_blocks(len(items), plan, cluster_cpus))
        return ds.map_batches(decode_encode, fn_kwargs=dict(
            choices=choices, threads=threads, decode=decode_kwargs(plan, size, threads)),
            batch_size=plan.batch_size, batch_format="numpy", num_cpus=cpus)
    blocks = max(1, -(-len(items) // plan.clips_per_task))  # a decode task handles one block
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    decode_cpus, encoder_cpus = plan_resources(plan, actors, cluster_cpus)
    # parallelism comes from the tasks: each decodes with as many codec threads as CPUs it asked for
    ds = ds.flat_map(decode_parts, num_cpus=decode_cpus,
                     fn_kwargs=decode_kwargs(plan, size, max(1, round(decode_cpus))))
    return ds.map_batches(
        EncodeBatch, fn_constructor_kwargs={"choices": choices, "threads": max(1, round(encoder_cpus))},
        batch_size=plan.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        num_cpus=encoder_cpus, num_gpus=1 if gpus else 0)
