"""The training loop for sft, DPO, IPO, Sr-DPO and Sr-IPO (docs/method.md).

One step = ``batch_size`` preference pairs, split across processes and into micro-batches:
  * chosen and rejected go through the policy in one forward (CompletionLogps): each pair packed as one
    sequence [x, y⁺, y⁻] where that is exact for the model (trainer/packing.py), else a padded [2B, T] batch;
  * Sr objectives add one no-grad policy forward on the p ⊕ x sequences (Δπ is stop-gradient);
  * reference log-probs (x and p ⊕ x) come from the on-disk cache (trainer/refcache.py), so no
    reference model is in memory while training.
One process, or under ``torchrun`` DDP or FSDP2 (``fsdp``) on torch.distributed (trainer/distributed.py);
bf16 autocast where trainer.modeling.resolve_precision says so; gradients of micro-batches accumulate
without communication except in the last. Every process makes the same number of forwards and backwards
per step, whatever its share of the pairs (:func:`step_micro_batches`): a process with fewer
micro-batches repeats one with weight 0, so that no collective waits for ever.

Output (see contracts/run_dir.py): config.yaml, log.jsonl (one line per step), run_info.json,
checkpoint-<step>/ and final/ (Hugging Face checkpoints with srdpo_info.json; checkpoints also hold
trainer_state/ for exact resume, trainer/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from contracts import objectives
from contracts.errors import UserError
from contracts.files import Appender, Lock
from contracts.ids import FINAL_DIR
from contracts.run_dir import RUN_INFO, TRAIN_CONFIG, TRAIN_LOG
from contracts.tables import TOKEN_FIELDS
from trainer import distributed as D
from trainer.checkpoint import (STATE_DIR, STATE_FILE, latest_checkpoint, load_trainer_state, save_checkpoint,
                                slim_checkpoints)
from trainer.checkpoint import write_json as _write_json
from trainer.config import TrainConfig, check_resume, dump_yaml
from trainer.data import (TokenizedPair, TruncationReport, length_grouped_order, load_preference_data,
                          tokenize_pairs)
from trainer.losses import PairTerms, PreferenceLoss, Settings, objective_loss
from trainer.modeling import Precision, load_tokenizer, resolve_precision
from trainer.scoring import PairLogps

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the run stopped before the optimizer step that would spread it."""


# ------------------------------------------------------------------------------------------ helpers


def objective_terms(cfg: TrainConfig, terms: PairTerms) -> PreferenceLoss:
    """Per-example loss, rewards and margins of one micro-batch: the objective's loss (trainer.losses)."""
    return objective_loss(cfg.objective, terms, Settings.of(cfg))


def lr_factor(cfg: TrainConfig, total_steps: int):
    """Step -> fraction of the peak learning rate: linear warm-up then constant (DPO reference:
    min(1, (s+1)/(warmup+1))), or warm-up then cosine."""
    w = cfg.warmup_steps

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / (w + 1))
        if cfg.scheduler == "constant" or s < w:
            return warm
        progress = min(1.0, (s - w) / max(1, total_steps - w))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))


def schedule_warnings(cfg: TrainConfig, n_pairs: int, steps_per_epoch: int, total_steps: int) -> list[str]:
    """What makes no sense in the schedule for this data, each with what the run will do anyway."""
    out = []
    if cfg.batch_size > n_pairs:
        out.append(f"batch_size {cfg.batch_size} is more than the {n_pairs} usable pairs: each step takes all "
                   f"{n_pairs}; set --batch-size to at most {n_pairs} for more than one step per epoch")
    if total_steps > steps_per_epoch * cfg.epochs:
        out.append(f"max_steps {total_steps} is more than {cfg.epochs} epoch(s) of {steps_per_epoch} steps: each "
                   f"pair is trained on about {total_steps / steps_per_epoch:.1f} times; give fewer steps, or more "
                   f"data, unless repeating the pairs is meant (then set --epochs to say so)")
    peak = max(map(lr_factor(cfg, total_steps), range(total_steps)))
    if cfg.warmup_steps >= total_steps:
        out.append(f"warmup_steps {cfg.warmup_steps} is not shorter than the run's {total_steps} steps: the "
                   f"learning rate rises to {peak:.1%} of {cfg.learning_rate:g} at most ({peak * cfg.learning_rate:.2g}); "
                   f"set --warmup-steps below {total_steps} (e.g. {max(0, total_steps // 10)})")
    elif peak < 0.1:
        out.append(f"the learning rate never exceeds {peak:.1%} of its peak {cfg.learning_rate:g}")
    return out


def epoch_batches(pairs: list[TokenizedPair], cfg: TrainConfig, epoch: int, world: int) -> list[list[int]]:
    """The step batches of one epoch: a deterministic function of (seed, epoch), so resume is exact."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if cfg.group_by_length:
        order = length_grouped_order([p.length for p in pairs], cfg.batch_size, g)
    else:
        order = torch.randperm(len(pairs), generator=g).tolist()
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    return [b for b in batches if len(b) >= world]  # every process needs at least one pair


def step_micro_batches(pairs: list[TokenizedPair], idx: list[int], cfg: TrainConfig, world: int,
                       packing: bool) -> list[list[list[int]]]:
    """Every process's micro-batches of the step ``idx`` (rank r takes every world-th pair from the r-th,
    longest first). Each process computes all of them, so all agree on the number of forwards without
    communicating."""
    from trainer.packing import micro_batches

    micro = cfg.micro_batch_size or math.ceil(cfg.batch_size / world)
    return [micro_batches(pairs, sorted(idx[r::world], key=lambda i: -pairs[i].length), max_pairs=micro,
                          max_tokens=cfg.max_tokens_per_micro_batch, packing=packing) for r in range(world)]


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _std(xs) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return float(math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)))


# ---------------------------------------------------------------------------------------------- train


def precision_of(cfg: TrainConfig) -> Precision:
    """How a run of ``cfg`` runs its models (its reference pass included)."""
    return resolve_precision(cfg.device, cfg.dtype, cfg.mixed_precision, fsdp=cfg.fsdp)


def load_pairs(cfg: TrainConfig, tokenizer=None) -> tuple[list[TokenizedPair], TruncationReport]:
    """The tokenized pairs a run of ``cfg`` trains on (the first ``max_pairs`` records)."""
    tokenizer = tokenizer or load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    records = load_preference_data(cfg.data, split=cfg.split)
    if cfg.max_pairs:
        records = records[:cfg.max_pairs]
    return tokenize_pairs(records, tokenizer, cfg, source=cfg.data, rating_fields=tuple(cfg.rating_fields),
                          require_ratings=objectives.get(cfg.objective).ratings)


def ref_cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else Path(cfg.output).resolve().parent / ".ref_cache"


def reference_pass(cfg: TrainConfig, *, refine: bool | None = None, pairs: list[TokenizedPair] | None = None,
                   precision: Precision | None = None, progress: bool | None = None) -> tuple[PairLogps, Path]:
    """The reference log-probs that a run of ``cfg`` trains against, from the cache or computed, exactly
    as :func:`train` gets them (in the precision of its forward, FSDP's included); a pipeline calls it
    once before several runs share the cache entry.

    ``refine``: also on p ⊕ x (default: if the objective needs Δπ).
    """
    from trainer.refcache import reference_logps

    precision = precision or precision_of(cfg)
    if pairs is None:
        pairs, _ = load_pairs(cfg)
    return reference_logps(
        cfg.ref_model or cfg.model, pairs, cfg, precision=precision, reduce=cfg.reduce,
        refine=objectives.needs_refine(cfg.objective) if refine is None else refine,  # on p ⊕ x too
        cache_dir=ref_cache_dir(cfg), batch_size=cfg.ref_batch_size, chunk_size=cfg.chunk_size,
        progress=cfg.progress if progress is None else progress, trust_remote_code=cfg.trust_remote_code,
        packing=cfg.packing, verify=cfg.verify_logps)


def reference_only(cfg: TrainConfig) -> Path | None:
    """The reference pass alone, on x and p ⊕ x (the cache entry every objective reads); under torchrun
    every process scores its share. Returns the cache file."""
    cfg.check()
    with D.process_group(precision_of(cfg).device):
        _, path = reference_pass(cfg, refine=True, progress=cfg.progress and D.rank() == 0)
    return path


def train(cfg: TrainConfig) -> Path:
    """Train as configured; return the final checkpoint directory (``<output>/final``).

    Under torchrun every process calls it (DDP, or FSDP2 with ``cfg.fsdp``); alone it trains in this
    process (with ``fsdp``: FSDP over a one-process group, the same code).
    """
    cfg.check()
    with D.process_group(precision_of(cfg).device, fsdp=cfg.fsdp), deterministic(cfg.deterministic):
        return _train(cfg)


@contextlib.contextmanager
def deterministic(on: bool):
    """Deterministic algorithms for the duration (``--deterministic``): torch's deterministic kernels
    (index_add and the index_select backward of the LM head sort instead of using atomics), cuBLAS with a
    fixed workspace, no cuDNN autotuning. Restored afterwards."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read by cuBLAS when it makes a workspace
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        if before[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


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
        if hasattr(model, "activation_checkpointing_enable"):  # its name since transformers 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    policy = CompletionLogps(model, cfg.chunk_size)
    if cfg.compile:
        _body(model).compile()
    policy.train()
    batcher = PairBatcher(model, packing=cfg.packing, device=prec.device, compiled=cfg.compile)
    return policy, D.wrap(policy, fsdp=cfg.fsdp, device=prec.device, autocast=prec.autocast), batcher


def _optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


@dataclass
class _Run:
    """A training run from its set-up to its last step: what each step reads and advances."""

    cfg: TrainConfig
    prec: Precision
    tokenizer: object
    pairs: list[TokenizedPair]
    ref: PairLogps | None  # the reference's log-probs (None for objectives without a reference)
    policy: torch.nn.Module  # CompletionLogps
    engine: torch.nn.Module  # what the gradient forward calls (DDP over the policy, or the policy)
    batcher: object  # trainer.packing.PairBatcher
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    identity: dict  # what the run is, written once: in run_info.json and every checkpoint's srdpo_info.json
    info: dict  # run_info.json
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    pairs_seen: int = 0
    epoch: int = 0
    batch_idx: int = 0
    t_start: float = 0.0
    verified: bool = False
    last_ckpt: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output)

    @property
    def sr(self) -> bool:
        return objectives.needs_refine(self.cfg.objective)

    def amp(self):
        p = self.prec
        return torch.autocast(p.device.type, dtype=p.autocast) if p.autocast else contextlib.nullcontext()

    def checkpoint_info(self) -> dict:
        return {**self.identity, "step": self.step, "pairs_seen": self.pairs_seen}

    def state(self) -> dict:
        return {"step": self.step, "pairs_seen": self.pairs_seen, "epoch": self.epoch, "batch_in_epoch": self.batch_idx,
                "elapsed_s": time.time() - self.t_start, "data_hash": self.identity["data_hash"], "seed": self.cfg.seed}


def _setup(cfg: TrainConfig) -> _Run:
    """Data, reference log-probs, policy, optimizer and schedule; the state of a resumed run; the run's
    identity and config.yaml and run_info.json written (by rank 0)."""
    from trainer.logprobs import param_counts
    from trainer.refcache import pairs_hash

    out, prec, world = Path(cfg.output), precision_of(cfg), D.world()
    resume_from = latest_checkpoint(out) if cfg.resume else None
    D.barrier()  # every process has looked before rank 0 writes into the run directory
    _seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    pairs, report = load_pairs(cfg, tokenizer)
    if len(pairs) < world:
        raise UserError(f"{cfg.data}: only {len(pairs)} usable pairs for {world} processes ({report.summary()})")
    obj = objectives.get(cfg.objective)
    ref, cache_file = (reference_pass(cfg, pairs=pairs, precision=prec, progress=cfg.progress and D.rank() == 0)
                       if obj.reference else (None, None))
    policy, engine, batcher = _policy(cfg, resume_from or cfg.model, prec)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = _optimizer(cfg, params)
    steps_per_epoch = len(epoch_batches(pairs, cfg, 0, world))
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs  # max_steps overrides epochs (as HF)
    if D.rank() == 0 and resume_from is None:
        for w in schedule_warnings(cfg, len(pairs), steps_per_epoch, total_steps):
            log.warning("%s: %s; training as set", cfg.output, w)
    identity = {"objective": cfg.objective, "beta": cfg.beta, "lam": cfg.lam if obj.refine else None,
                "settings": {k: getattr(cfg, k) for k in obj.settings}, "reduce": cfg.reduce, "model": cfg.model,
                "ref_model": (cfg.ref_model or cfg.model) if obj.reference else None, "data": cfg.data,
                "data_hash": pairs_hash(pairs), "seed": cfg.seed}
    info = {**identity, "train_pairs": len(pairs), "dropped_pairs": len(report.dropped),
            "dropped": [[str(i), r] for i, r in report.dropped],
            "truncation": {"prompt_truncated": report.prompt_truncated,
                           "completion_truncated": report.completion_truncated},
            "quality_prompt_placement": cfg.prompt_placement, "ref_cache": str(cache_file) if cache_file else None,
            "total_steps": total_steps, "steps": 0, "wall_time_s": 0.0, "device": str(prec.device),
            "num_processes": world, "dtype": str(prec.weights).replace("torch.", ""),
            "mixed_precision": "bf16" if prec.autocast == torch.bfloat16 else "no", "precision": prec.key,
            "deterministic": cfg.deterministic, **param_counts(policy.model), "finished": False}
    run = _Run(cfg, prec, tokenizer, pairs, ref, policy, engine, batcher, params, optimizer,
               make_scheduler(optimizer, cfg, total_steps), identity, info, steps_per_epoch, total_steps,
               verified=not cfg.verify_logps, last_ckpt=resume_from)
    if resume_from is not None:
        _resume(run, resume_from)
    run.t_start = time.time() - run.info["wall_time_s"]
    out.mkdir(parents=True, exist_ok=True)
    if D.rank() == 0:
        dump_yaml(cfg, out / TRAIN_CONFIG)
        _truncate_log(out / TRAIN_LOG, run.step)
    _record_attention(run)
    return run


def _resume(run: _Run, ckpt: Path) -> None:
    st = json.loads((ckpt / STATE_DIR / STATE_FILE).read_text())
    if st["data_hash"] != run.identity["data_hash"]:
        raise ValueError(f"{ckpt}: was trained on different data (data hash differs); cannot resume")
    load_trainer_state(run.policy, run.optimizer, run.scheduler, ckpt)
    run.step, run.pairs_seen, run.info["wall_time_s"] = st["step"], st["pairs_seen"], st["elapsed_s"]
    run.epoch, run.batch_idx = divmod(run.step, run.steps_per_epoch)
    run.info["steps"] = run.step
    log.info("resuming from %s at step %d", ckpt, run.step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop the lines a killed run wrote after its last checkpoint (and a line it cut off)."""
    from contracts.files import write_text
    from contracts.jsonl import read_jsonl_lines

    if path.exists():
        keep = [r for _, r in read_jsonl_lines(path, skip_cut_tail=True) if r["step"] <= step]
        write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _record_attention(run: _Run) -> None:
    """What the packed batches run and every fall-back so far, into run_info.json (rank 0 writes it)."""
    b = run.batcher
    run.info.update(packing=b.packing, attention=b.attention, packing_fallbacks=dict(b.fallbacks),
                    packed_shapes=len(b.shapes) if b.shapes else None)
    if run.cfg.compile or b.attention == "flex_attention":
        from torch._dynamo.utils import counters

        run.info["compiled_graphs"] = int(counters["stats"]["unique_graphs"])
    if D.rank() == 0:
        _write_json(run.out / RUN_INFO, run.info)


def _micro_batch(run: _Run, cp: list[TokenizedPair], r: PairLogps | None, step_pairs: int, sft_tokens: int,
                 weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One micro-batch of B pairs: (loss to backpropagate, its part of the step's loss, per-pair stats).

    Losses are scaled so that the gradient, averaged over processes by DDP/FSDP, is that of the step's
    mean over all its pairs (docs/method.md, open choice 7); ``weight`` 0: a repeat that only keeps the
    processes' forwards and backwards in step."""
    cfg, world, B = run.cfg, D.world(), len(cp)
    obj = objectives.get(cfg.objective)
    p = None
    if obj.refine:  # Δπ's policy terms: no gradient, so the module itself (outside DDP's bookkeeping)
        with torch.no_grad(), run.amp():
            p, _ = run.policy(**run.batcher(cp, refine=True), reduce="sum")
    with run.amp():
        lp, n = run.engine(**run.batcher(cp), reduce="sum")
    dev = lp.device
    gaps = [x.rating_gap for x in cp]
    terms = PairTerms(lp[:B], lp[B:], n[:B], n[B:], cfg.reduce, *(None,) * 6,
                      rating_gap=torch.tensor(gaps, device=dev) if obj.ratings else None,
                      token_scale=step_pairs / sft_tokens)
    if r is not None:
        terms.ref_chosen, terms.ref_rejected = r.chosen, r.rejected
        terms.ref_chosen_p, terms.ref_rejected_p = r.refine_chosen, r.refine_rejected
    if p is not None:
        terms.chosen_p, terms.rejected_p = p[:B].float(), p[B:].float()
    out = objective_terms(cfg, terms)
    logps = (terms.seq(terms.chosen, terms.n_chosen), terms.seq(terms.rejected, terms.n_rejected))
    stats = {"logps/chosen": logps[0], "logps/rejected": logps[1]}
    if obj.preference:
        stats.update({"rewards/chosen": out.chosen_rewards, "rewards/rejected": out.rejected_rewards,
                      "margin": out.margins})
    if obj.refine:
        stats.update(delta=out.delta, margin_p=terms.margin_p)
    return (out.losses.sum() / step_pairs * world * weight, out.losses.detach().sum() / step_pairs * weight, stats)


def _token_counts(cp: list[TokenizedPair], sr: bool, packed: bool) -> list[int]:
    """Tokens forwarded (padding aside) and target tokens (through the LM head), with gradient (chosen and
    rejected on x) and without (p ⊕ x, Sr only), in TOKEN_FIELDS' order: the cost of a step that a busy
    machine cannot distort. Packed, a pair's context is forwarded once; padded, once per completion."""
    from trainer.packing import context, pair_tokens

    def forwarded(refine: bool) -> int:
        return sum(pair_tokens(p, refine) + (0 if packed else len(context(p, refine))) for p in cp)

    targets = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in cp)
    return [forwarded(False), targets, forwarded(True) if sr else 0, targets if sr else 0]


def _verify_once(run: _Run, cp: list[TokenizedPair], idx: list[int]) -> None:
    """Chunked log-probs against full logits, and packed against padded, on the first micro-batch of the
    run (every process: FSDP's collectives need all of them)."""
    from trainer.logprobs import verify_against_full_logits

    plain = run.batcher.padded(cp)
    with run.amp():
        diff = verify_against_full_logits(run.policy, plain["input_ids"], plain["attention_mask"], plain["loss_mask"])
        # packed = padded, else packing off; on the step's pairs, the same on every process
        run.batcher.verify(run.policy, [run.pairs[i] for i in idx])
    log.info("chunked log-probs verified against full logits (max diff %.2e)", diff)
    run.verified = True


def _step(run: _Run, idx: list[int]) -> dict:
    """One optimizer step on the pairs ``idx`` (all processes together); returns its log row."""
    cfg, device, rank = run.cfg, run.prec.device, D.rank()
    t0 = time.time()
    if not run.verified:
        _verify_once(run, [run.pairs[i] for i in step_micro_batches(run.pairs, idx, cfg, D.world(),
                                                                    run.batcher.packing)[rank][0]], idx)
    everyone = step_micro_batches(run.pairs, idx, cfg, D.world(), run.batcher.packing)
    mine, n = everyone[rank], max(len(c) for c in everyone)
    chunks = mine + [mine[-1][-1:]] * (n - len(mine))  # repeats of one pair, weight 0: the same count on all
    sft_tokens = sum(len(run.pairs[i].chosen_ids) for i in idx)
    stats: dict[str, list[float]] = {}
    loss_sum = torch.zeros((), device=device)
    tokens = torch.zeros(len(TOKEN_FIELDS), dtype=torch.long, device=device)
    for ci, chunk in enumerate(chunks):
        real = ci < len(mine)
        cp = [run.pairs[i] for i in chunk]
        r = None
        if run.ref is not None:
            s = run.ref.select(chunk)
            r = PairLogps(*(None if t is None else t.to(device, torch.float32) for t in (
                s.chosen, s.rejected, s.refine_chosen, s.refine_rejected, s.n_chosen, s.n_rejected)))
        with D.grad_sync(run.engine, ci == len(chunks) - 1):
            loss, part, st = _micro_batch(run, cp, r, len(idx), sft_tokens, 1.0 if real else 0.0)
            loss.backward()
        if real:
            loss_sum = loss_sum + part
            tokens += torch.tensor(_token_counts(cp, run.sr, run.batcher.packing), device=device)
            _add(stats, st)
    total_loss = D.all_sum(loss_sum).item()
    if not math.isfinite(total_loss):
        _diverged(run, total_loss)
    grad_norm = D.clip_grad_norm(run.params, cfg.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step, run.batch_idx, run.pairs_seen = run.step + 1, run.batch_idx + 1, run.pairs_seen + len(idx)
    allstats: dict[str, list[float]] = {}
    for s in D.all_gather(stats):
        for k, v in s.items():
            allstats.setdefault(k, []).extend(v)
    row = {"step": run.step, "pairs_seen": run.pairs_seen, "loss": total_loss, "lr": lr, "grad_norm": grad_norm}
    row.update(_summarise(allstats, run.sr))
    row.update(zip(TOKEN_FIELDS, D.all_sum(tokens).tolist()))
    row["fallbacks"] = sum(run.batcher.fallbacks.values())
    row["step_time_s"] = time.time() - t0
    row["elapsed_s"] = time.time() - run.t_start
    return row


def _diverged(run: _Run, total_loss: float) -> None:
    msg = (f"step {run.step + 1}: loss is {total_loss}; stopping before the optimizer step. "
           f"Last good checkpoint: {run.last_ckpt or 'none (no checkpoint saved yet)'}")
    run.info.update(steps=run.step, wall_time_s=time.time() - run.t_start, finished=False, error=msg)
    if D.rank() == 0:
        _write_json(run.out / RUN_INFO, run.info)
    raise TrainingDiverged(msg)


def _next_batch(run: _Run) -> list[int] | None:
    """The pairs of the next step (None at an epoch's end: the position moved to the next epoch)."""
    batches = epoch_batches(run.pairs, run.cfg, run.epoch, D.world())
    if run.batch_idx >= len(batches):
        run.epoch, run.batch_idx = run.epoch + 1, 0
        return None
    return batches[run.batch_idx]


def save_dtype(cfg: TrainConfig, prec) -> torch.dtype | None:
    """The dtype weights without trainer state are stored in (None: as trained, fp32 master weights)."""
    if cfg.save_dtype == "auto":
        return prec.autocast if prec.autocast not in (None, prec.weights) else None
    return {"fp32": None, "bf16": torch.bfloat16}[cfg.save_dtype]


def _save(run: _Run, path: Path, *, with_state: bool) -> None:
    save_checkpoint(run.policy, run.optimizer, run.scheduler, run.tokenizer, path, run.checkpoint_info(),
                    run.state() if with_state else None, dtype=save_dtype(run.cfg, run.prec))
    if with_state:
        run.last_ckpt = path


def _train(cfg: TrainConfig) -> Path:
    out = Path(cfg.output)
    # one run writes an output at a time (rank 0 holds the lock for all its processes)
    with Lock(out, what=f"--output {out}") if D.rank() == 0 else contextlib.nullcontext():
        return _train_locked(cfg)


def _train_locked(cfg: TrainConfig) -> Path:
    from contracts.progress import bar as progress_bar

    out = Path(cfg.output)
    if check_resume(cfg) == "finished":
        log.info("%s: already finished with these settings; nothing to do", out)
        if D.rank() == 0:
            print(f"{out} is already finished (its final/ was trained with these settings): nothing changed")
        return out / FINAL_DIR
    run = _setup(cfg)
    main = D.rank() == 0
    bar = progress_bar(total=run.total_steps, initial=run.step, desc=f"train {cfg.objective}",
                       enabled=cfg.progress and main, unit="step")
    fp = Appender(out / TRAIN_LOG) if main else None
    fallbacks = 0
    try:
        while run.step < run.total_steps:
            idx = _next_batch(run)
            if idx is None:
                continue
            row = _step(run, idx)
            if fp is not None:
                fp.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row.get('accuracy', float('nan')):.2f}")
            if row["fallbacks"] != fallbacks:  # what packing runs changed: run_info.json says so at once
                fallbacks = row["fallbacks"]
                _record_attention(run)
            if cfg.save_every and run.step % cfg.save_every == 0 and run.step < run.total_steps:
                _save(run, out / f"checkpoint-{run.step}", with_state=True)
    finally:
        bar.close()
        if fp is not None:
            fp.close()
    _save(run, out / FINAL_DIR, with_state=False)
    run.info.update(steps=run.step, wall_time_s=time.time() - run.t_start, finished=True)
    _record_attention(run)
    _slim(run)
    return out / FINAL_DIR


def _slim(run: _Run) -> None:
    """A finished run keeps what evaluation reads: checkpoints lose their trainer state (and are stored in
    the save dtype) unless keep_trainer_state."""
    if D.rank() == 0 and not run.cfg.keep_trainer_state:
        freed = slim_checkpoints(Path(run.cfg.output), save_dtype(run.cfg, run.prec))
        if freed:
            log.info("%s: checkpoints without trainer state now (%.0f MB freed; keep_trainer_state keeps it)",
                     run.cfg.output, freed / 1e6)
    D.barrier()


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
