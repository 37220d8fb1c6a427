"""Training configuration: one typed dataclass, the single source of every training setting.

Its defaults are the paper's settings, with the DPO reference code's where the paper is silent
(docs/method.md#defaults). The `train` flags, the YAML file of `train --config` and the `train:` section
of a reproduce config are all derived from it (contracts.settings). Precedence, lowest first:
defaults < ``--config FILE`` < flags given on the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from contracts import objectives
from contracts.settings import ConfigError, FlagSource, YamlSource, apply, check_required, load_yaml, option
from trainer.data import DataConfig

# Settings of one run that a reproduce config sets once for all runs, at its top level or per run.
PER_RUN = ("objective", "model", "data", "output", "ref_model", "split", "resume", "ref_cache_dir", "lam")


@dataclass
class TrainConfig(DataConfig):
    """Every option of a training run (the data options of DataConfig included)."""

    objective: str = option("dpo", choices=objectives.trainable, help="training objective (the list below; "
                                                                       "docs/method.md#objectives)")
    model: str | None = option(None, required=True, metavar="PATH",
                               help="policy initialisation: a Hugging Face checkpoint directory")
    data: str | None = option(None, required=True, metavar="FILE",
                              help="preference data: JSONL/JSON/parquet file or (online) a HF dataset name")
    output: str | None = option(None, required=True, metavar="DIR", help="run directory (e.g. RUN_DIR/train/<run>)")
    ref_model: str | None = option(None, metavar="PATH", help="frozen reference (default: --model)")
    split: str = option("train", help="dataset split (HF datasets)")
    max_pairs: int | None = option(None, ge=1, help="use only the first N records")
    beta: float = option(0.1, gt=0, help="β")
    lam: float = option(0.5, ge=0, help="λ of the Sr- objectives (the paper searches 0.1, 0.3, 0.5, 1)")
    label_smoothing: float = option(0.1, ge=0, lt=0.5, help="ε of cdpo and rdpo (the share of pairs assumed "
                                                             "flipped)")
    simpo_gamma: float = option(0.5, ge=0, help="γ of simpo: the target margin (TRL's default)")
    orpo_lambda: float = option(0.1, gt=0, help="λ of orpo: the weight of its odds-ratio term (TRL's default)")
    odpo_alpha: float = option(1.0, ge=0, help="α of odpo: the offset is α·log(1 + rating gap)")
    rating_fields: tuple[str, ...] = option(("chosen_rating", "rejected_rating"), metavar="CHOSEN,REJECTED",
                                            help="record fields with the two answers' ratings (objectives that "
                                                 "read them: odpo)")
    reduce: str = option("sum", choices=("sum", "mean"),
                         help="sequence log-prob: sum over tokens (paper) or per-token mean (TRL's IPO)")
    learning_rate: float = option(5e-7, gt=0, flags=("--lr",), help="peak learning rate")
    optimizer: str = option("rmsprop", choices=("rmsprop", "adamw"))
    weight_decay: float = option(0.0, ge=0)
    scheduler: str = option("constant", choices=("constant", "cosine"),
                            help="linear warm-up, then constant (DPO reference) or cosine decay")
    warmup_steps: int = option(150, ge=0)
    batch_size: int = option(64, ge=1, help="preference pairs per optimizer step (all processes together)")
    micro_batch_size: int | None = option(None, ge=1, help="pairs per forward per process "
                                                            "(default: batch_size / processes)")
    max_tokens_per_micro_batch: int | None = option(None, ge=1, help="also cap each forward at this many "
                                                     "tokens (packed: x + y⁺ + y⁻ per pair; padded: 2 · pairs · "
                                                     "longest row); a longer pair goes alone")
    packing: bool = option(True, help="each pair as one sequence [x, y⁺, y⁻] (x computed once, several pairs per "
                                      "row, padding only at a row's end) where exact for the model; false: padded "
                                      "[2B, T] batches")
    max_grad_norm: float = option(10.0, gt=0, help="gradient-norm clipping")
    epochs: int = option(1, ge=1)
    max_steps: int | None = option(None, ge=1, help="stop after this many steps (overrides epochs)")
    save_every: int = option(0, ge=0, help="steps between checkpoint-<step>/ (0: only final/)")
    keep_trainer_state: bool = option(False, help="keep each checkpoint's optimizer and RNG state (2/3 of it "
                                                  "with Adam) once final/ is written, to train on from it later")
    save_dtype: str = option("auto", choices=("auto", "fp32", "bf16"),
                             help="weights of final/ and of checkpoints without trainer state: auto = the dtype "
                                  "the model computes in (bf16 under bf16 mixed precision, else fp32)")
    seed: int = option(0, ge=0)
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA if available")
    dtype: str = option("auto", choices=("auto", "fp32", "bf16"),
                        help="weights: auto = fp32 master weights (bf16 autocast on a bf16 GPU)")
    mixed_precision: str = option("auto", choices=("auto", "bf16", "no"),
                                  help="auto: bf16 autocast on a bf16 GPU, none elsewhere")
    gradient_checkpointing: bool = option(False, help="recompute activations in the backward (less memory)")
    compile: bool = option(False, help="torch.compile the transformer body (packed rows in bucketed shapes: a "
                                       "few compilations per run)")
    deterministic: bool = option(False, help="deterministic algorithms (bitwise-reproducible runs and resumes on "
                                             "a GPU; slower, see docs/method.md)")
    fsdp: bool = option(False, action="store_true",
                        help="shard parameters, gradients and optimizer state over the processes (FSDP2; "
                             "launch with torchrun); else DDP under torchrun")
    group_by_length: bool = option(True, help="batches of similar lengths (less padding)")
    chunk_size: int = option(1024, ge=1, help="completion tokens per LM-head chunk")
    ref_batch_size: int = option(8, ge=1, help="pairs per forward of the reference pass")
    ref_cache_dir: str | None = option(None, metavar="DIR", help="reference log-prob cache "
                                                                 "(default: <output>/../.ref_cache)")
    verify_logps: bool = option(True, help="check chunked log-probs against full logits on the first batch")
    resume: bool = option(False, action="store_true", help="continue from the last checkpoint in --output")
    trust_remote_code: bool = option(False, action="store_true", help="run the model repository's own code")
    progress: bool = option(True, flag="--no-progress", action="store_false", help="no progress bar")

    def check(self) -> None:
        """Checks across options (each option's own type and range are checked as it is set)."""
        DataConfig.check(self)
        if self.max_steps is None and self.epochs < 1:
            raise ConfigError("epochs must be >= 1")
        if len(self.rating_fields) != 2:
            raise ConfigError(f"rating_fields: give two names (chosen, rejected), got {list(self.rating_fields)}")

    def to_dict(self) -> dict:
        return asdict(self)


# Options that change how a run executes, not what it computes: a resumed run may differ in these only.
EXECUTION_ONLY = ("output", "resume", "progress", "device", "micro_batch_size", "chunk_size", "ref_batch_size",
                  "ref_cache_dir", "verify_logps", "compile", "gradient_checkpointing", "trust_remote_code",
                  "fsdp", "packing", "max_tokens_per_micro_batch", "deterministic", "keep_trainer_state")


# The settings losses read (trainer.losses.Settings); an objective's loss reads those contracts.objectives names.
LOSS_SETTINGS = ("beta", "lam", "label_smoothing", "simpo_gamma", "orpo_lambda", "odpo_alpha")


def result_settings(cfg: TrainConfig) -> dict:
    """The settings that decide a run's result (a resumed run must agree on them: its config.yaml): all but
    the execution-only ones and the loss settings its objective does not read."""
    obj = objectives.get(cfg.objective)
    skip = {*EXECUTION_ONLY, *(k for k in LOSS_SETTINGS if k not in obj.settings)}
    if not obj.ratings:
        skip.add("rating_fields")
    if cfg.save_dtype == "auto":  # follows the precision settings, which the key holds
        skip.add("save_dtype")
    return {k: v for k, v in asdict(cfg).items() if k not in skip}


def _inputs(cfg: TrainConfig, inputs: dict | None) -> dict:
    """The run's inputs as results depend on them: what the caller knows them as (e.g. the unit that made
    a model), else models and data by their content (contracts.hashing.fingerprint)."""
    from contracts.hashing import fingerprint

    given = inputs or {}
    return {"model": given.get("model") or fingerprint(cfg.model),
            "ref_model": given.get("ref_model") or fingerprint(cfg.ref_model or cfg.model),
            "data": given.get("data") or fingerprint(cfg.data)}


def result_key(cfg: TrainConfig, inputs: dict | None = None) -> dict:
    """What decides a training run's result, and nothing else: every setting but the execution-only ones
    (EXECUTION_ONLY), its model, reference and data as :func:`_inputs` says. The one definition: reproduce
    keys its training units by it."""
    return {**result_settings(cfg), **_inputs(cfg, inputs)}


def reference_key(cfg: TrainConfig, inputs: dict | None = None) -> dict:
    """What decides the reference log-probs a run of ``cfg`` trains against (the cache entry itself is also
    keyed by the model's content and by the precision resolved on the machine: trainer/refcache.py)."""
    ins = _inputs(cfg, inputs)
    return {"ref_model": ins["ref_model"], "data": ins["data"], "data_cfg": asdict(cfg.data_config()),
            "reduce": cfg.reduce, "max_pairs": cfg.max_pairs, "split": cfg.split, "dtype": cfg.dtype,
            "mixed_precision": cfg.mixed_precision}


def check_resume(cfg: TrainConfig) -> str:
    """What to do with ``cfg.output``: "fresh" (nothing there), "resume" or "finished" (already done:
    nothing to change). A run there is never continued, nor overwritten, with settings that change its
    result: that is refused naming the first difference."""
    import json

    from contracts.ids import FINAL_DIR
    from contracts.run_dir import RUN_INFO, TRAIN_CONFIG, TRAIN_LOG

    out = Path(cfg.output)
    if not (out / TRAIN_CONFIG).is_file():
        if out.is_dir() and (any(out.glob("checkpoint-*")) or (out / TRAIN_LOG).exists()):
            raise ConfigError(f"--output {out}: holds files of a run but no {TRAIN_CONFIG}; choose a new --output")
        return "fresh"
    if not cfg.resume:
        raise ConfigError(f"--output {out}: already holds a run; pass --resume to continue it or choose a new --output")
    before = result_settings(load_yaml_config(out / TRAIN_CONFIG))
    now = result_settings(cfg)
    for key, value in now.items():
        if before.get(key) != value:
            raise ConfigError(f"--resume: {out} was trained with {key} = {before.get(key)!r}, not {value!r}; resume "
                              "with the same settings, or train into a new --output")
    info = out / RUN_INFO
    if (out / FINAL_DIR).is_dir() and info.is_file() and json.loads(info.read_text()).get("finished"):
        return "finished"
    return "resume"


def build_config(flags: dict, *, config_file: str | None = None) -> TrainConfig:
    """Defaults < YAML ``config_file`` < ``flags`` (the flags actually given), validated."""
    cfg = TrainConfig()
    if config_file:
        data, lines = load_yaml(config_file)
        cfg = apply(cfg, data, YamlSource(config_file, lines))
    cfg = apply(cfg, flags, FlagSource())
    check_required(cfg, FlagSource())
    cfg.check()
    return cfg


def load_yaml_config(path: str | Path) -> TrainConfig:
    """A run's config.yaml (as the trainer wrote it) read back."""
    data, lines = load_yaml(path)
    return apply(TrainConfig(), data, YamlSource(path, lines))


def dump_yaml(cfg: TrainConfig, path: str | Path) -> None:
    import yaml

    from contracts.files import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
