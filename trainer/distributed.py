"""torch.distributed for the trainer: one process, DDP or FSDP2, one code path on CPU (gloo) and GPU (nccl).

`torchrun` (one node or several) starts the processes and sets RANK / WORLD_SIZE / LOCAL_RANK and the
rendezvous; :func:`process_group` joins that group. Without torchrun the run is one process and no
group exists (FSDP alone makes a one-process group, so that ``--fsdp`` means the same code everywhere).

    plain  the policy itself
    ddp    DistributedDataParallel over the policy (every process holds the whole model)
    fsdp   FSDP2: ``fully_shard`` on every decoder layer, then on the root (the CompletionLogps)

The root is the CompletionLogps and not the Hugging Face model because CompletionLogps.forward calls
the transformer body and then reads the LM-head weight itself (trainer/logprobs.py): FSDP2 unshards a
module's own parameters (embeddings, final norm, LM head) for the duration of that module's forward,
so only the wrapper's forward sees them whole. On a bf16 GPU the parameters are all-gathered in bf16
and the gradients reduced in fp32 (MixedPrecisionPolicy), over the fp32 master weights.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from contracts.errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the process-group environment)."""
    return "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def process_group(device: torch.device, *, fsdp: bool = False):
    """Join torchrun's process group for the duration (nccl on CUDA, gloo on CPU); with ``fsdp`` and no
    launcher, a one-process group. A group made here is destroyed on exit; one that exists is used."""
    made = False
    if not dist.is_initialized() and (launched() or fsdp):
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if launched():
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        made = True
    try:
        yield
    finally:
        if made:
            dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather(obj) -> list:
    """Every process's ``obj``, in rank order, on every process (pickled in transit, never on disk)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's ``obj`` on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


# ------------------------------------------------------------------------------------------ wrapping


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks: the classes the model names in ``_no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise UserError(f"{type(model).__name__}: no decoder layers found to shard with --fsdp (the model names "
                        f"none in _no_split_modules: {sorted(names)}); train it without --fsdp")
    return layers


def wrap(policy: nn.Module, *, fsdp: bool, device: torch.device, autocast: torch.dtype | None) -> nn.Module:
    """Place ``policy`` for training; return the module the training forward calls.

    fsdp: shard ``policy`` in place (its parameters become DTensor shards on ``device``) and return it;
    under torchrun otherwise: DDP over it; else ``policy`` on ``device``.
    """
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        mp = MixedPrecisionPolicy(param_dtype=autocast, reduce_dtype=torch.float32) if autocast else \
            MixedPrecisionPolicy()
        for layer in decoder_layers(policy.model):
            fully_shard(layer, mesh=mesh, mp_policy=mp)
        fully_shard(policy, mesh=mesh, mp_policy=mp)  # the root: embeddings, final norm, LM head
        return policy
    policy.to(device)
    if dist.is_initialized():
        from torch.nn.parallel import DistributedDataParallel

        # buffers (rotary tables) never change: no broadcast before every forward
        return DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False)
    return policy


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def grad_sync(module: nn.Module, sync: bool):
    """Gradient accumulation: no gradient communication in the backwards run inside ``grad_sync(m, False)``
    (every micro-batch but the last of a step); DDP's no_sync, FSDP2's set_requires_gradient_sync."""
    if sync or not dist.is_initialized():
        yield
    elif is_sharded(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        with module.no_sync():
            yield


def clip_grad_norm(params, max_norm: float) -> float:
    """Clip the global gradient norm (across shards under FSDP); return the norm before clipping."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


@contextlib.contextmanager
def unsharded(module: nn.Module):
    """The root's own parameters whole outside its forward (e.g. to call the Hugging Face model directly);
    the decoder layers still gather theirs in their own forwards."""
    if not is_sharded(module):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()
