"""Data-parallel training with ``torchrun``: process group, model wrapping, shared structure draws.

How the replicas stay identical:
- weights and structure parameters: DistributedDataParallel averages every gradient, and
  ``fit`` clips the masks after each (identical) optimizer step;
- BatchNorm statistics: DDP broadcasts rank 0's buffers before each forward, and ``fit`` once
  more after each epoch (``sync_buffers``);
- the random structure a training forward draws (each technique's ``DRAWS`` layers: Blockout
  clusters, MaskConnect / GateConnect K-of-N samples) is seeded alike: a hook around each such
  layer seeds the generator from ``(seed, site, call count)``, identical on every rank, and
  restores the rank's own generator afterwards, so data-dependent randomness (Jumpout) keeps
  independent per-rank streams;
- ``freeze`` reads those identical parameters, so the frozen structure is identical too;
  ``check_replicas`` verifies all of it by comparing a digest of every rank's state.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from maskfx import techniques


class ReplicaMismatchError(RuntimeError):
    """The ranks hold different weights or structure: data-parallel training went wrong."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; ``world == 1`` when not launched by ``torchrun``."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 logs and saves; the others only train."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU; on GPU nccl
    for CUDA tensors and gloo for the CPU scalars the ranks agree on, which nccl cannot carry);
    a plain single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Distributed(dist.get_rank(), dist.get_world_size())


def teardown(job: Distributed) -> None:
    if job.active and dist.is_initialized():
        dist.destroy_process_group()


def wrap(net: nn.Module, job: Distributed) -> nn.Module:
    """``net`` inside DDP when distributed. Built per phase: after ``freeze`` fewer parameters
    train, and DDP fixes its parameter set at construction. ``find_unused_parameters``: a
    MaskConnect draw may leave a block whose output no drawn connection reads without gradient."""
    if not job.active:
        return net
    return DistributedDataParallel(net, find_unused_parameters=True)


def share_structure_draws(net: nn.Module, seed: int) -> list[torch.utils.hooks.RemovableHandle]:
    """Seed every structure layer's training forward from ``(seed, site, call count)`` and restore
    the caller's generator after it, so all ranks draw the same clusters and connections.
    Returns the hook handles (``handle.remove()`` undoes it)."""
    handles = []
    drawing = tuple(t for technique in techniques.PIPELINE for t in technique.DRAWS)
    layers = [m for m in net.modules() if isinstance(m, drawing)]
    for site, layer in enumerate(layers):
        calls = [0]
        saved: list[torch.Tensor] = []

        def before(module: nn.Module, args: Any, site: int = site, calls: list = calls, saved: list = saved) -> None:
            if module.training:
                saved.append((torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None))
                torch.manual_seed(mix(seed, site, calls[0]))
                calls[0] += 1

        def after(module: nn.Module, args: Any, output: Any, saved: list = saved) -> None:
            if saved:
                cpu, cuda = saved.pop()
                torch.set_rng_state(cpu)
                if cuda is not None:
                    torch.cuda.set_rng_state(cuda)

        handles += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    return handles


def mix(*numbers: int) -> int:
    """A 63-bit seed from integers; distinct tuples give unrelated seeds."""
    digest = hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sync_buffers(net: nn.Module, job: Distributed) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank. DDP does so before each
    forward, so after the last one of an epoch each rank still holds its own batch's update."""
    if job.active:
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)


def state_digest(net: nn.Module) -> str:
    """A hash of every parameter and buffer (weights, masks, cluster logits, frozen structure)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(net: nn.Module, job: Distributed) -> str:
    """The state digest, after checking that every rank has the same; raises otherwise."""
    digest = state_digest(net)
    if job.active:
        digests: list[str] = [""] * job.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise ReplicaMismatchError(f"ranks disagree on the model state: {digests}")
    return digest


def mean_over_ranks(value: float, job: Distributed) -> float:
    """``value`` averaged over all ranks (the epoch loss that rank 0 reports)."""
    if not job.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item() / job.world


def on_main(job: Distributed, action: Callable[[], Any]) -> Any:
    """Run ``action`` on rank 0 only (saving, writing reports); the others wait for it."""
    result = action() if job.main else None
    if job.active:
        dist.barrier()
    return result
