"""Checkpoints: Hugging Face weights for every consumer, sharded trainer state for an exact resume.

``checkpoint-<step>/`` and ``final/`` hold the whole model as safetensors (gathered from the FSDP shards,
written by rank 0; ``AutoModelForCausalLM.from_pretrained`` loads it), the tokenizer and srdpo_info.json.
``checkpoint-<step>/trainer_state/`` adds what a resume needs, none of it pickled:

    optimizer/              optimizer state via torch.distributed.checkpoint, as safetensors: each process
                            writes its own shard (with FSDP) in parallel
    rng-<rank>.safetensors  each process's RNG states
    state.json              step and data position, scheduler, optimizer hyper-parameters, number of
                            processes; written last, so a checkpoint without it is incomplete and ignored

The model weights of a resume come from the checkpoint's own safetensors (fp32 master weights, exact).
A checkpoint is written to ``<name>.tmp`` and renamed when complete, so a kill never leaves half of one.
Several nodes need the run directory on a shared file system (as every multi-node trainer does).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import warnings
from pathlib import Path

import torch

from contracts.errors import UserError
from contracts.ids import CHECKPOINT_INFO
from trainer import distributed as D

STATE_DIR = "trainer_state"
STATE_FILE = "state.json"


def latest_checkpoint(out: Path) -> Path | None:
    """The last complete checkpoint-<step>/ (not a <name>.tmp that a kill left behind)."""
    done = [p for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit()
            and (p / STATE_DIR / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def write_json(path: Path, obj) -> None:
    from contracts.files import write_json as atomic_json

    atomic_json(path, obj)


def full_model_state(policy) -> dict[str, torch.Tensor]:
    """The Hugging Face model's whole weights on CPU on rank 0 ({} elsewhere); a collective under FSDP."""
    if D.is_sharded(policy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = policy.state_dict() if D.rank() == 0 else {}
    return {k.removeprefix("model."): v for k, v in sd.items()}  # "model." is the CompletionLogps attribute


def save_checkpoint(policy, optimizer, scheduler, tokenizer, path: Path, info: dict, state: dict | None,
                    dtype: torch.dtype | None = None) -> None:
    """A Hugging Face checkpoint (+ srdpo_info.json, + trainer_state/ if ``state``); every process calls it.

    It is written to ``<name>.tmp/`` (one name all processes know: they all write into it) and renamed
    when complete. On a full disk the unfinished ``<name>.tmp/`` is removed and :class:`OutOfSpace` names
    the checkpoint and about how much it needs; earlier checkpoints are untouched."""
    from contracts.files import find_out_of_space, out_of_space

    tmp = path.with_name(path.name + ".tmp")
    cast = dtype if state is None else None  # a resume needs the fp32 master weights: cast only without state
    try:
        sd = full_model_state(policy)
        if cast is not None:
            sd = {k: v.to(cast) if v.is_floating_point() else v for k, v in sd.items()}
        if D.rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            policy.model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
            if cast is not None:
                _config_dtype(tmp, cast)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / CHECKPOINT_INFO, info)
        D.barrier()  # tmp/ exists before the others write their shards into it
        if state is not None:
            _save_trainer_state(policy, optimizer, scheduler, tmp / STATE_DIR, state)
        if D.rank() == 0:
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        D.barrier()
    except BaseException as e:
        if D.rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if find_out_of_space(e) is not None:
            raise out_of_space(path, checkpoint_bytes(policy, optimizer if state is not None else None)) from e
        raise


def slim_checkpoints(out: Path, dtype: torch.dtype | None) -> int:
    """Once the run is finished: drop each checkpoint's trainer state (nothing resumes a finished run) and,
    with ``dtype``, store its weights in it (what evaluation computes in), as final/ is. Idempotent; a kill
    midway leaves each file whole. Returns the bytes freed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from contracts.files import written

    freed = 0
    for ck in sorted(p for p in out.glob("checkpoint-*") if p.is_dir()):
        size = _bytes(ck)
        shutil.rmtree(ck / STATE_DIR, ignore_errors=True)
        cast = False
        for f in sorted(ck.glob("*.safetensors")) if dtype is not None else []:
            with safe_open(f, "pt") as sf:
                meta, tensors = sf.metadata(), {k: sf.get_tensor(k) for k in sf.keys()}
            if all(t.dtype == dtype or not t.is_floating_point() for t in tensors.values()):
                continue
            with written(f) as tmp:
                save_file({k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}, tmp, meta)
            cast = True
        if cast:
            _config_dtype(ck, dtype)
        freed += size - _bytes(ck)
    return freed


def _config_dtype(folder: Path, dtype: torch.dtype) -> None:
    """config.json says the dtype the weights are stored in (what ``dtype="auto"`` loads them as)."""
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        for k in ("dtype", "torch_dtype"):
            if k in cfg:
                cfg[k] = str(dtype).removeprefix("torch.")
        write_json(cfg_path, cfg)


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def checkpoint_bytes(policy, optimizer=None) -> int:
    """About what a checkpoint of ``policy`` takes on disk: its weights, and with ``optimizer`` its state
    (one tensor per parameter and state entry)."""
    weights = sum(p.numel() * p.element_size() for p in policy.parameters())
    states = optimizer.state.values() if optimizer is not None else []
    per_param = max((sum(isinstance(v, torch.Tensor) and v.dim() > 0 for v in s.values()) for s in states), default=0)
    return weights * (1 + per_param)


def _optimizer_tensors(osd: dict) -> dict[str, torch.Tensor]:
    """The optimizer state's tensors under flat names (DTensor shards under FSDP)."""
    flat = {}
    for fqn, st in osd["state"].items():
        for k, v in st.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"optimizer state {fqn}.{k} is a {type(v).__name__}; only tensors are saved")
            flat[f"{fqn}.{k}"] = v
    return flat


def _save_trainer_state(policy, optimizer, scheduler, folder: Path, state: dict) -> None:
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    osd = get_optimizer_state_dict(policy, optimizer)  # sharded as the parameters are
    with _quiet_single_process():
        dcp.save(_optimizer_tensors(osd),
                 storage_writer=HuggingFaceStorageWriter(str(folder / "optimizer"), save_distributed=True))
    save_file(_rng_state(), str(folder / f"rng-{D.rank()}.safetensors"))
    D.barrier()
    if D.rank() == 0:
        write_json(folder / STATE_FILE, {**state, "world_size": D.world(), "scheduler": scheduler.state_dict(),
                                         "param_groups": osd["param_groups"]})


def load_trainer_state(policy, optimizer, scheduler, ckpt: Path) -> dict:
    """Restore optimizer, scheduler and RNG from ``ckpt``; return its state.json (step, data position)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    folder = ckpt / STATE_DIR
    st = json.loads((folder / STATE_FILE).read_text())
    if st["world_size"] != D.world():
        raise UserError(f"{ckpt} was written by {st['world_size']} processes; resume it with the same number "
                        f"(this run has {D.world()}): the micro-batches and the RNG streams depend on it")
    osd = get_optimizer_state_dict(policy, optimizer)  # initialised state, sharded as this run shards it
    with _quiet_single_process():
        dcp.load(_optimizer_tensors(osd), storage_reader=HuggingFaceStorageReader(str(folder / "optimizer")))
    live = optimizer.param_groups
    osd["param_groups"] = [{k: tuple(v) if isinstance(g.get(k), tuple) else v for k, v in saved.items()}
                           for g, saved in zip(live, st["param_groups"])]  # JSON has lists for tuples
    set_optimizer_state_dict(policy, optimizer, osd)
    scheduler.load_state_dict(st["scheduler"])
    _set_rng_state(load_file(str(folder / f"rng-{D.rank()}.safetensors")))
    return st


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns at every save and load outside a process group; one process is a case we mean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
