"""The training loop for sft, DPO, IPO, Sr-DPO and Sr-IPO (docs/method.md).

One step = ``batch_size`` preference pairs, split across processes and into micro-batches:
  * chosen and rejected go through the policy in one forward (CompletionLogps): each pair packed as one
    sequence [x, y⁺, y⁻] where that is exact for the model (trainer/packing.py), else a padded [2B, T] batch;
  * Sr objectives add one no-grad policy forward on the p ⊕ x sequences (Δπ is stop-gradient);
  * reference log-probs (x and p ⊕ x) come from the on-disk cache (trainer/refcache.py), so no
    reference model is in memory while training.
One process, or under ``torchrun`` DDP or FSDP2 (``fsdp``) on torch.distributed (trainer/distributed.py);
bf16 autocast where trainer.modeling.resolve_precision says so; gradients of micro-batches accumulate
without communication except in the last.

Output (see contracts/run_dir.py): config.yaml, log.jsonl (one line per step), run_info.json,
checkpoint-<step>/ and final/ (Hugging Face checkpoints with srdpo_info.json; checkpoints also hold
trainer_state/ for exact resume, trainer/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import torch

from contracts import objectives
from contracts.errors import UserError
from contracts.ids import FINAL_DIR
from contracts.run_dir import RUN_INFO, TRAIN_CONFIG, TRAIN_LOG
from contracts.tables import TOKEN_FIELDS
from trainer import distributed as D
from trainer.checkpoint import STATE_DIR, STATE_FILE, latest_checkpoint, load_trainer_state, save_checkpoint
from trainer.checkpoint import write_json as _write_json
from trainer.config import TrainConfig, check_resume, dump_yaml
from trainer.data import (TokenizedPair, TruncationReport, length_grouped_order, load_preference_data,
                          tokenize_pairs)
from trainer.losses import PreferenceLoss, preference_loss
from trainer.modeling import Precision, load_tokenizer, resolve_precision
from trainer.scoring import PairLogps

log = logging.getLogger(__name__)


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


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _std(xs) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return float(math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)))


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


def reference_only(cfg: TrainConfig) -> Path | None:
    """The reference pass alone, on x and p ⊕ x (the cache entry every objective reads); under torchrun
    every process scores its share. Returns the cache file."""
    cfg.check()
    with D.process_group(resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision).device):
        _, path = reference_pass(cfg, refine=True, progress=cfg.progress and D.rank() == 0)
    return path


def train(cfg: TrainConfig) -> Path:
    """Train as configured; return the final checkpoint directory (``<output>/final``).

    Under torchrun every process calls it (DDP, or FSDP2 with ``cfg.fsdp``); alone it trains in this
    process (with ``fsdp``: FSDP over a one-process group, the same code).
    """
    cfg.check()
    with D.process_group(resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision).device, fsdp=cfg.fsdp):
        return _train(cfg)


def _seed(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


def _policy(cfg: TrainConfig, path, prec: Precision):
    """The policy (CompletionLogps over the Hugging Face model) placed for training, the module that the
    training forward calls (itself, or DDP over it; under FSDP it is sharded in place), and the batcher that
    builds its inputs (packed rows where exact for the model: it may switch the model's attention, so it is
    made before the model is wrapped)."""
    from transformers import AutoModelForCausalLM

    from trainer.logprobs import CompletionLogps, _body
    from trainer.modeling import local_checkpoint
    from trainer.packing import PairBatcher

    model = AutoModelForCausalLM.from_pretrained(str(local_checkpoint(path)), dtype=prec.weights,
                                                 trust_remote_code=cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    policy = CompletionLogps(model, cfg.chunk_size)
    if cfg.compile:
        _body(model).compile()
    policy.train()
    batcher = PairBatcher(model, packing=cfg.packing, device=prec.device)
    return policy, D.wrap(policy, fsdp=cfg.fsdp, device=prec.device, autocast=prec.autocast), batcher


def _micro_batch(cfg: TrainConfig, engine, policy, batcher, cp: list[TokenizedPair], r: PairLogps | None,
                 step_pairs: int, sft_tokens: int, world: int, amp) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One micro-batch of B pairs: (loss to backpropagate, its part of the step's loss, per-pair stats).

    Losses are scaled so that the gradient, averaged over processes by DDP/FSDP, is that of the step's
    mean over all its pairs (docs/method.md, open choice 7)."""
    sr, B = objectives.needs_refine(cfg.objective), len(cp)
    pc_p = pr_p = None
    if sr:  # Δπ's policy terms: no gradient, so the module itself (outside DDP's bookkeeping)
        with torch.no_grad(), amp():
            lpp, _ = policy(**batcher(cp, refine=True), reduce=cfg.reduce)
        pc_p, pr_p = lpp[:B], lpp[B:]
    with amp():
        lp, _ = engine(**batcher(cp), reduce=cfg.reduce if r is not None else "sum")
    pc, pr = lp[:B], lp[B:]
    if r is None:  # sft: token-mean NLL over the step's chosen completions (all processes together)
        loss = -pc.sum() / sft_tokens * world
        return loss, loss.detach() / world, {"logps/chosen": pc, "logps/rejected": pr}
    terms = objective_terms(cfg, pc, pr, r, pc_p, pr_p)
    stats = {"rewards/chosen": terms.chosen_rewards, "rewards/rejected": terms.rejected_rewards,
             "margin": terms.margins, "logps/chosen": pc, "logps/rejected": pr}
    if sr:
        stats.update(delta=terms.delta, margin_p=(pc_p.float() - r.refine_chosen) - (pr_p.float() - r.refine_rejected))
    return terms.losses.sum() / step_pairs * world, terms.losses.detach().sum() / step_pairs, stats


def _token_counts(cp: list[TokenizedPair], sr: bool, packed: bool) -> list[int]:
    """Tokens forwarded (padding aside) and target tokens (through the LM head), with gradient (chosen and
    rejected on x) and without (p ⊕ x, Sr only), in TOKEN_FIELDS' order: the cost of a step that a busy
    machine cannot distort. Packed, a pair's context is forwarded once; padded, once per completion."""
    from trainer.packing import context, pair_tokens

    def forwarded(refine: bool) -> int:
        return sum(pair_tokens(p, refine) + (0 if packed else len(context(p, refine))) for p in cp)

    targets = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in cp)
    return [forwarded(False), targets, forwarded(True) if sr else 0, targets if sr else 0]


def _train(cfg: TrainConfig) -> Path:
    from tqdm.auto import tqdm

    from trainer.logprobs import param_counts, verify_against_full_logits
    from trainer.packing import micro_batches
    from trainer.refcache import pairs_hash

    out = Path(cfg.output)
    if check_resume(cfg) == "finished":
        log.info("%s: already finished with these settings; nothing to do", out)
        if D.rank() == 0:
            print(f"{out} is already finished (its final/ was trained with these settings): nothing changed")
        return out / FINAL_DIR
    prec = resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision)  # in a group: this process's GPU
    rank, world, main = D.rank(), D.world(), D.rank() == 0
    mp = "bf16" if prec.autocast == torch.bfloat16 else "no"
    amp = (lambda: torch.autocast(prec.device.type, dtype=prec.autocast)) if prec.autocast else contextlib.nullcontext

    resume_from = latest_checkpoint(out) if cfg.resume else None
    D.barrier()  # every process has looked before rank 0 writes into the run directory
    _seed(cfg.seed)

    # Data
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    sr = objectives.needs_refine(cfg.objective)
    preference = objectives.get(cfg.objective).preference
    pairs, report = load_pairs(cfg, tokenizer)
    if len(pairs) < world:
        raise UserError(f"{cfg.data}: only {len(pairs)} usable pairs for {world} processes ({report.summary()})")
    data_hash = pairs_hash(pairs)

    # Reference log-probs (cached): on a miss every process scores its share, rank 0 writes the entry.
    ref = cache_file = None
    ref_model = cfg.ref_model or cfg.model
    if preference:
        ref, cache_file = reference_pass(cfg, pairs=pairs, precision=prec, progress=cfg.progress and main)

    # Policy, optimizer, schedule
    policy, engine, batcher = _policy(cfg, resume_from or cfg.model, prec)
    params = [p for p in policy.parameters() if p.requires_grad]
    if cfg.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(epoch_batches(pairs, cfg, 0, world))
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs  # max_steps overrides epochs (as HF)
    scheduler = make_scheduler(optimizer, cfg, total_steps)

    step, pairs_seen, elapsed0 = 0, 0, 0.0
    if resume_from is not None:
        st = json.loads((resume_from / STATE_DIR / STATE_FILE).read_text())
        if st["data_hash"] != data_hash:
            raise ValueError(f"{resume_from}: was trained on different data (data hash differs); cannot resume")
        load_trainer_state(policy, optimizer, scheduler, resume_from)
        step, pairs_seen, elapsed0 = st["step"], st["pairs_seen"], st["elapsed_s"]
        log.info("resuming from %s at step %d", resume_from, step)

    out.mkdir(parents=True, exist_ok=True)
    log_path = out / TRAIN_LOG
    if main:
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
        "total_steps": total_steps, "steps": step, "wall_time_s": elapsed0, "device": str(prec.device),
        "num_processes": world, "dtype": str(prec.weights).replace("torch.", ""), "mixed_precision": mp,
        **param_counts(policy.model), "packing": batcher.packing, "finished": False,
    }

    def info(s: int) -> dict:
        return {"objective": cfg.objective, "beta": cfg.beta, "lam": cfg.lam if sr else None, "step": s,
                "pairs_seen": pairs_seen, "reduce": cfg.reduce, "base_model": cfg.model,
                "ref_model": run_info["ref_model"], "data_hash": data_hash, "data": cfg.data}

    if main:
        _write_json(out / RUN_INFO, run_info)

    device = prec.device
    micro = cfg.micro_batch_size or math.ceil(cfg.batch_size / world)
    t_start = time.time() - elapsed0
    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.objective}", disable=not (cfg.progress and main),
               unit="step")
    verified = not cfg.verify_logps
    last_ckpt = resume_from
    epoch, batch_idx = divmod(step, steps_per_epoch)
    fp = log_path.open("a") if main else None
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
            tokens = torch.zeros(len(TOKEN_FIELDS), dtype=torch.long, device=device)
            for ci, chunk in enumerate(chunks):
                cp = [pairs[i] for i in chunk]
                if not verified:  # every process, FSDP included (its collectives need all of them)
                    plain = batcher.padded(cp)
                    with amp():
                        diff = verify_against_full_logits(policy, plain["input_ids"], plain["attention_mask"],
                                                          plain["loss_mask"])
                        # packed = padded, else packing off; on the step's pairs, the same on every process
                        batcher.verify(policy, [pairs[i] for i in idx])
                    log.info("chunked log-probs verified against full logits (max diff %.2e)", diff)
                    verified = True
                tokens += torch.tensor(_token_counts(cp, sr, batcher.packing), device=device)
                r = None
                if preference:
                    r = ref.select(chunk)
                    r = PairLogps(*(None if t is None else t.to(device, torch.float32) for t in (
                        r.chosen, r.rejected, r.refine_chosen, r.refine_rejected, r.n_chosen, r.n_rejected)))
                with D.grad_sync(engine, ci == len(chunks) - 1):
                    loss, part, st = _micro_batch(cfg, engine, policy, batcher, cp, r, len(idx), sft_tokens, world,
                                                  amp)
                    loss.backward()
                loss_sum = loss_sum + part
                _add(stats, st)
            total_loss = D.all_sum(loss_sum).item()
            if not math.isfinite(total_loss):
                msg = (f"step {step + 1}: loss is {total_loss}; stopping before the optimizer step. "
                       f"Last good checkpoint: {last_ckpt or 'none (no checkpoint saved yet)'}")
                run_info.update(steps=step, wall_time_s=time.time() - t_start, finished=False, error=msg)
                if main:
                    _write_json(out / RUN_INFO, run_info)
                raise TrainingDiverged(msg)
            grad_norm = D.clip_grad_norm(params, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, batch_idx, pairs_seen = step + 1, batch_idx + 1, pairs_seen + len(idx)
            allstats: dict[str, list[float]] = {}
            for s in D.all_gather(stats):
                for k, v in s.items():
                    allstats.setdefault(k, []).extend(v)
            row = {"step": step, "pairs_seen": pairs_seen, "loss": total_loss, "lr": lr, "grad_norm": grad_norm}
            row.update(_summarise(allstats, sr))
            row.update(zip(TOKEN_FIELDS, D.all_sum(tokens).tolist()))
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
                save_checkpoint(policy, optimizer, scheduler, tokenizer, ck, info(step), state)
                last_ckpt = ck
    finally:
        bar.close()
        if fp is not None:
            fp.close()
    final = out / FINAL_DIR
    save_checkpoint(policy, optimizer, scheduler, tokenizer, final, info(step), None)
    run_info.update(steps=step, wall_time_s=time.time() - t_start, finished=True, packing=batcher.packing)
    if main:
        _write_json(out / RUN_INFO, run_info)
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
