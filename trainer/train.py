"""The training loop for sft, DPO, IPO, Sr-DPO and Sr-IPO (docs/method.md).

One step = ``batch_size`` preference pairs, split across processes and into micro-batches:
  * chosen and rejected go through the policy in one forward (CompletionLogps): each pair packed as one
    sequence [x, y⁺, y⁻] where that is exact for the model (trainer/packing.py), else a padded [2B, T] batch;
  * Sr objectives add one no-grad policy forward on the p ⊕ x sequences (Δπ is stop-gradient);
  * reference log-probs (x and p ⊕ x) come from the on-disk cache (trainer/refcache.py), so no
    reference model is in memory while training.
Accelerate provides device placement, bf16 autocast, DDP/FSDP (``accelerate launch``); gradients of
micro-batches accumulate under ``no_sync`` except the last.

Output (see contracts/run_dir.py): config.yaml, log.jsonl (one line per step), run_info.json,
checkpoint-<step>/ and final/ (Hugging Face checkpoints with srdpo_info.json; checkpoints also hold
trainer_state/ for exact resume).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch

from contracts import objectives
from contracts.errors import UserError
from contracts.ids import CHECKPOINT_INFO, FINAL_DIR
from contracts.run_dir import RUN_INFO, TRAIN_CONFIG, TRAIN_LOG
from trainer.config import TrainConfig, dump_yaml
from trainer.data import (TokenizedPair, TruncationReport, length_grouped_order, load_preference_data,
                          tokenize_pairs)
from trainer.losses import PreferenceLoss, preference_loss
from trainer.modeling import Precision, load_tokenizer, resolve_precision
from trainer.scoring import PairLogps

log = logging.getLogger(__name__)
STATE_DIR = "trainer_state"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the run stopped before the optimizer step that would spread it."""


# ------------------------------------------------------------------------------------------ helpers


def objective_terms(cfg: TrainConfig, pc, pr, ref: PairLogps, pc_p=None, pr_p=None) -> PreferenceLoss:
    """Per-example loss and rewards for one micro-batch (``ref`` already on the batch's device)."""
    return preference_loss(
        cfg.objective, pc, pr, ref.chosen, ref.rejected, beta=cfg.beta, lam=cfg.lam,
        pc_p=pc_p, pr_p=pr_p, rc_p=ref.refine_chosen, rr_p=ref.refine_rejected,
    )


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warm-up then constant (DPO reference: min(1, (s+1)/(warmup+1))), or warm-up then cosine."""
    w = cfg.warmup_steps

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / (w + 1))
        if cfg.scheduler == "constant" or s < w:
            return warm
        progress = min(1.0, (s - w) / max(1, total_steps - w))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_batches(pairs: list[TokenizedPair], cfg: TrainConfig, epoch: int, world: int) -> list[list[int]]:
    """The step batches of one epoch: a deterministic function of (seed, epoch), so resume is exact."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if cfg.group_by_length:
        order = length_grouped_order([p.length for p in pairs], cfg.batch_size, g)
    else:
        order = torch.randperm(len(pairs), generator=g).tolist()
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    return [b for b in batches if len(b) >= world]  # every process needs at least one pair


def latest_checkpoint(out: Path) -> Path | None:
    done = [p for p in out.glob("checkpoint-*") if (p / STATE_DIR / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _std(xs) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return float(math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)))


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------ checkpointing


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(acc, policy, optimizer, scheduler, tokenizer, path: Path, info: dict,
                    state: dict | None) -> None:
    """A Hugging Face checkpoint (+ srdpo_info.json, + trainer_state/ if ``state``), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    sd = acc.get_state_dict(policy)  # gathers FSDP shards; "model." is the CompletionLogps attribute
    if state is not None:
        optim_sd = full_optimizer_state(policy, optimizer)  # collective: every rank takes part
    sd = {k[len("model."):]: v for k, v in sd.items()}
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        model = acc.unwrap_model(policy).model
        model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _write_json(tmp / CHECKPOINT_INFO, info)
        if state is not None:
            (tmp / STATE_DIR).mkdir()
            torch.save({"optimizer": optim_sd, "scheduler": scheduler.state_dict(),
                        "rng": _rng_state()}, tmp / STATE_DIR / "state.pt")
            _write_json(tmp / STATE_DIR / "state.json", state)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    acc.wait_for_everyone()


def full_optimizer_state(policy, optimizer) -> dict:
    """The whole optimizer state keyed by parameter name, gathered from FSDP shards when sharded
    (torch.distributed.checkpoint's state-dict API; plain and DDP models go through it unchanged)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(policy, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                cpu_offload=True))


def load_full_optimizer_state(policy, optimizer, state: dict) -> None:
    """Inverse of :func:`full_optimizer_state` (rank 0's full state is re-sharded under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(policy, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


# ---------------------------------------------------------------------------------------------- train


def load_pairs(cfg: TrainConfig, tokenizer=None) -> tuple[list[TokenizedPair], TruncationReport]:
    """The tokenized pairs a run of ``cfg`` trains on (the first ``max_pairs`` records)."""
    tokenizer = tokenizer or load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    records = load_preference_data(cfg.data, split=cfg.split)
    if cfg.max_pairs:
        records = records[:cfg.max_pairs]
    return tokenize_pairs(records, tokenizer, cfg, source=cfg.data)


def ref_cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else Path(cfg.output).resolve().parent / ".ref_cache"


def reference_pass(cfg: TrainConfig, *, refine: bool | None = None, pairs: list[TokenizedPair] | None = None,
                   precision: Precision | None = None, progress: bool | None = None) -> tuple[PairLogps, Path]:
    """The reference log-probs that a run of ``cfg`` trains against, from the cache or computed, exactly
    as :func:`train` gets them; a pipeline calls it once before several runs share the cache entry.

    ``refine``: also on p ⊕ x (default: if the objective needs Δπ).
    """
    from trainer.refcache import reference_logps

    precision = precision or resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision)
    if pairs is None:
        pairs, _ = load_pairs(cfg)
    return reference_logps(
        cfg.ref_model or cfg.model, pairs, cfg, precision=precision, reduce=cfg.reduce,
        refine=objectives.needs_refine(cfg.objective) if refine is None else refine,
        cache_dir=ref_cache_dir(cfg), batch_size=cfg.ref_batch_size, chunk_size=cfg.chunk_size,
        progress=cfg.progress if progress is None else progress, trust_remote_code=cfg.trust_remote_code,
        packing=cfg.packing, verify=cfg.verify_logps)


def train(cfg: TrainConfig) -> Path:
    """Train as configured; return the final checkpoint directory (``<output>/final``)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, gather_object, set_seed
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from trainer.logprobs import CompletionLogps, verify_against_full_logits, _body
    from trainer.packing import PairBatcher, micro_batches
    from trainer.refcache import pairs_hash

    cfg.check()
    out = Path(cfg.output)
    prec = resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision)
    mp = "bf16" if prec.autocast == torch.bfloat16 else "no"
    if not torch.distributed.is_initialized():
        # Accelerate keeps process-wide state; several train() calls in one process (the reproduce
        # pipeline, tests) may use different precisions or devices.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(mixed_precision=mp, cpu=prec.device.type == "cpu")
    world, rank = acc.num_processes, acc.process_index
    prec = Precision(acc.device, prec.weights, prec.autocast)
    weight_dtype = prec.weights

    resume_from = latest_checkpoint(out) if cfg.resume else None
    if not cfg.resume and out.exists() and any(out.glob("checkpoint-*")) | (out / TRAIN_LOG).exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose a new --output")
    set_seed(cfg.seed)

    # Data
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    sr = objectives.needs_refine(cfg.objective)
    preference = objectives.get(cfg.objective).preference
    pairs, report = load_pairs(cfg, tokenizer)
    if len(pairs) < world:
        raise UserError(f"{cfg.data}: only {len(pairs)} usable pairs for {world} processes ({report.summary()})")
    data_hash = pairs_hash(pairs)

    # Reference log-probs (cached): the main process computes, the others then read the cache.
    ref = None
    ref_model = cfg.ref_model or cfg.model
    cache_file = None
    if preference:
        with acc.main_process_first():
            ref, cache_file = reference_pass(cfg, pairs=pairs, precision=prec,
                                             progress=cfg.progress and acc.is_main_process)

    # Policy
    model = AutoModelForCausalLM.from_pretrained(
        str(resume_from or cfg.model), dtype=weight_dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    policy = CompletionLogps(model, cfg.chunk_size)
    batcher = PairBatcher(model, packing=cfg.packing, device=acc.device)  # packed [x, y⁺, y⁻] rows where exact
    if cfg.compile:
        _body(model).compile()
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    if cfg.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(epoch_batches(pairs, cfg, 0, world))
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs  # max_steps overrides epochs (as HF)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    policy, optimizer = acc.prepare(policy, optimizer)

    step, pairs_seen, elapsed0 = 0, 0, 0.0
    if resume_from is not None:
        st = json.loads((resume_from / STATE_DIR / "state.json").read_text())
        if st["data_hash"] != data_hash:
            raise ValueError(f"{resume_from}: was trained on different data (data hash differs); cannot resume")
        blob = torch.load(resume_from / STATE_DIR / "state.pt", weights_only=True, map_location="cpu")
        load_full_optimizer_state(policy, optimizer, blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        _set_rng_state(blob["rng"])
        step, pairs_seen, elapsed0 = st["step"], st["pairs_seen"], st["elapsed_s"]
        log.info("resuming from %s at step %d", resume_from, step)

    out.mkdir(parents=True, exist_ok=True)
    log_path = out / TRAIN_LOG
    if acc.is_main_process:
        dump_yaml(cfg, out / TRAIN_CONFIG)
        if log_path.exists():  # drop lines a killed run wrote after its last checkpoint
            keep = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
            log_path.write_text("".join(l + "\n" for l in keep))
    run_info = {
        "objective": cfg.objective, "beta": cfg.beta, "lam": cfg.lam if sr else None, "reduce": cfg.reduce,
        "model": cfg.model, "ref_model": ref_model if preference else None,
        "data": cfg.data, "data_hash": data_hash, "train_pairs": len(pairs), "dropped_pairs": len(report.dropped),
        "dropped": [[str(i), r] for i, r in report.dropped], "truncation": {
            "prompt_truncated": report.prompt_truncated, "completion_truncated": report.completion_truncated},
        "quality_prompt_placement": cfg.prompt_placement, "ref_cache": str(cache_file) if cache_file else None,
        "total_steps": total_steps, "steps": step, "wall_time_s": elapsed0, "device": str(acc.device),
        "num_processes": world, "dtype": str(weight_dtype).replace("torch.", ""), "mixed_precision": mp,
        "packing": batcher.packing, "finished": False,
    }

    def info(s: int) -> dict:
        return {"objective": cfg.objective, "beta": cfg.beta, "lam": cfg.lam if sr else None, "step": s,
                "pairs_seen": pairs_seen, "reduce": cfg.reduce, "base_model": cfg.model,
                "ref_model": run_info["ref_model"], "data_hash": data_hash, "data": cfg.data}

    if acc.is_main_process:
        _write_json(out / RUN_INFO, run_info)

    device = acc.device
    micro = cfg.micro_batch_size or math.ceil(cfg.batch_size / world)
    t_start = time.time() - elapsed0
    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.objective}", disable=not (
        cfg.progress and acc.is_main_process), unit="step")
    verified = not cfg.verify_logps or acc.distributed_type == DistributedType.FSDP
    last_ckpt = resume_from
    epoch, batch_idx = divmod(step, steps_per_epoch)
    fp = log_path.open("a") if acc.is_main_process else None
    try:
        while step < total_steps:
            batches = epoch_batches(pairs, cfg, epoch, world)
            if batch_idx >= len(batches):
                epoch, batch_idx = epoch + 1, 0
                continue
            idx = batches[batch_idx]
            t0 = time.time()
            mine = sorted(idx[rank::world], key=lambda i: -pairs[i].length)
            chunks = micro_batches(pairs, mine, max_pairs=micro, max_tokens=cfg.max_tokens_per_micro_batch,
                                   packing=batcher.packing)
            sft_tokens = sum(len(pairs[i].chosen_ids) for i in idx)
            stats: dict[str, list[float]] = {}
            loss_sum = torch.zeros((), device=device)
            for ci, chunk in enumerate(chunks):
                cp = [pairs[i] for i in chunk]
                if not verified:
                    plain = batcher.padded(cp)
                    with acc.autocast():
                        diff = verify_against_full_logits(acc.unwrap_model(policy), plain["input_ids"],
                                                          plain["attention_mask"], plain["loss_mask"])
                        batcher.verify(policy, cp)  # packed = padded, else packing off (one log line)
                    log.info("chunked log-probs verified against full logits (max diff %.2e)", diff)
                    verified = True
                B = len(chunk)
                sync = acc.no_sync(policy) if ci < len(chunks) - 1 else contextlib.nullcontext()
                with sync:
                    with acc.autocast():
                        lp, _ = policy(**batcher(cp), reduce=cfg.reduce if preference else "sum")
                    pc, pr = lp[:B], lp[B:]
                    if not preference:
                        # sft: token-mean NLL over the step's chosen completions (all processes together)
                        loss = -pc.sum() / sft_tokens * world
                        _add(stats, {"logps/chosen": pc, "logps/rejected": pr})
                        loss_sum = loss_sum + loss.detach() / world
                    else:
                        pc_p = pr_p = None
                        if sr:
                            with torch.no_grad(), acc.autocast():
                                lpp, _ = policy(**batcher(cp, refine=True), reduce=cfg.reduce)
                            pc_p, pr_p = lpp[:B], lpp[B:]
                        r = ref.select(chunk)
                        r = PairLogps(*(None if t is None else t.to(device, torch.float32) for t in (
                            r.chosen, r.rejected, r.refine_chosen, r.refine_rejected, r.n_chosen, r.n_rejected)))
                        terms = objective_terms(cfg, pc, pr, r, pc_p, pr_p)
                        loss = terms.losses.sum() / len(idx) * world  # DDP averages over processes
                        loss_sum = loss_sum + terms.losses.detach().sum() / len(idx)
                        _add(stats, {"rewards/chosen": terms.chosen_rewards, "rewards/rejected": terms.rejected_rewards,
                                     "margin": terms.margins, "logps/chosen": pc, "logps/rejected": pr})
                        if sr:
                            m_p = (pc_p.float() - r.refine_chosen) - (pr_p.float() - r.refine_rejected)
                            _add(stats, {"delta": terms.delta, "margin_p": m_p})
                    acc.backward(loss)
            total_loss = acc.reduce(loss_sum, reduction="sum").item()
            if not math.isfinite(total_loss):
                msg = (f"step {step + 1}: loss is {total_loss}; stopping before the optimizer step. "
                       f"Last good checkpoint: {last_ckpt or 'none (no checkpoint saved yet)'}")
                run_info.update(steps=step, wall_time_s=time.time() - t_start, finished=False, error=msg)
                if acc.is_main_process:
                    _write_json(out / RUN_INFO, run_info)
                raise TrainingDiverged(msg)
            grad_norm = acc.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, batch_idx, pairs_seen = step + 1, batch_idx + 1, pairs_seen + len(idx)
            gathered = gather_object([stats])
            allstats: dict[str, list[float]] = {}
            for s in gathered:
                for k, v in s.items():
                    allstats.setdefault(k, []).extend(v)
            row = {"step": step, "pairs_seen": pairs_seen, "loss": total_loss, "lr": lr,
                   "grad_norm": float(grad_norm)}
            row.update(_summarise(allstats, sr))
            row["step_time_s"] = time.time() - t0
            row["elapsed_s"] = time.time() - t_start
            if fp is not None:
                fp.write(json.dumps(row) + "\n")
                fp.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.4f}", acc=f"{row.get('accuracy', float('nan')):.2f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                state = {"step": step, "pairs_seen": pairs_seen, "epoch": epoch, "batch_in_epoch": batch_idx,
                         "elapsed_s": time.time() - t_start, "data_hash": data_hash, "seed": cfg.seed}
                ck = out / f"checkpoint-{step}"
                save_checkpoint(acc, policy, optimizer, scheduler, tokenizer, ck, info(step), state)
                last_ckpt = ck
    finally:
        bar.close()
        if fp is not None:
            fp.close()
    final = out / FINAL_DIR
    save_checkpoint(acc, policy, optimizer, scheduler, tokenizer, final, info(step), None)
    run_info.update(steps=step, wall_time_s=time.time() - t_start, finished=True, packing=batcher.packing)
    if acc.is_main_process:
        _write_json(out / RUN_INFO, run_info)
    acc.end_training()
    return final


def _add(stats: dict, values: dict) -> None:
    for k, v in values.items():
        stats.setdefault(k, []).extend(v.detach().float().cpu().tolist())


def _summarise(s: dict[str, list[float]], sr: bool) -> dict:
    row = {}
    if "rewards/chosen" in s:
        rc, rj = s["rewards/chosen"], s["rewards/rejected"]
        row.update({
            "rewards/chosen": _mean(rc), "rewards/rejected": _mean(rj),
            "rewards/margins": _mean([a - b for a, b in zip(rc, rj)]),
            "rewards/accuracies": _mean([float(a > b) for a, b in zip(rc, rj)]),
        })
    row["logps/chosen"] = _mean(s.get("logps/chosen", []))
    row["logps/rejected"] = _mean(s.get("logps/rejected", []))
    if "margin" in s:
        row["margin"] = _mean(s["margin"])
        row["accuracy"] = _mean([float(m > 0) for m in s["margin"]])
    if sr and "delta" in s:
        row.update({"delta/mean": _mean(s["delta"]), "delta/std": _std(s["delta"]),
                    "margin_p": _mean(s["margin_p"]), "accuracy_p": _mean([float(m > 0) for m in s["margin_p"]])})
    return row
