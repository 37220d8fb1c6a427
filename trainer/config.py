"""Training configuration: one typed dataclass, a paper preset, YAML loading with CLI overrides.

Precedence (lowest first): dataclass defaults < ``--preset`` < ``--config FILE`` < explicit CLI flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from trainer.data import DataConfig

TRAIN_OBJECTIVES = ("sft", "dpo", "ipo", "sr-dpo", "sr-ipo")

# The paper's stated settings plus the DPO reference defaults it leaves implicit (spec, "Experimental
# settings"): β 0.1, lr 5e-7, RMSprop, batch 64, max length 512, max prompt 256, 150 warm-up, clip 10.
PRESETS: dict[str, dict] = {
    "paper": dict(
        beta=0.1, learning_rate=5e-7, optimizer="rmsprop", scheduler="constant", batch_size=64,
        warmup_steps=150, max_grad_norm=10.0, epochs=1, reduce="sum",
        data=dict(max_length=512, max_prompt_length=256),
    ),
}


@dataclass
class TrainConfig:
    """Every option of a training run; see ``srdpo-eval train --help`` for the flags."""

    objective: str = "dpo"  # sft | dpo | ipo | sr-dpo | sr-ipo
    model: str = ""  # policy initialisation (HF checkpoint dir)
    data: str = ""  # preference file (JSONL/JSON/parquet) or, online only, a HF dataset name
    output: str = ""  # run directory (train/<run>)
    ref_model: str | None = None  # frozen reference; default: the initial policy itself
    split: str = "train"
    max_pairs: int | None = None  # use only the first N records (debugging, CI-sized runs)
    beta: float = 0.1
    lam: float = 0.5  # λ of Sr-X; the paper searches {0.1, 0.3, 0.5, 1} and does not state the final one
    reduce: str = "sum"  # sequence log-prob: "sum" (paper) or "mean" per token (TRL's IPO)
    learning_rate: float = 5e-7
    optimizer: str = "rmsprop"  # rmsprop | adamw
    weight_decay: float = 0.0
    scheduler: str = "constant"  # "constant": linear warm-up then constant (DPO reference); "cosine"
    warmup_steps: int = 150
    batch_size: int = 64  # preference pairs per optimizer step (all processes together)
    micro_batch_size: int | None = None  # pairs per forward per process; None: batch_size / processes
    max_grad_norm: float = 10.0
    epochs: int = 1
    max_steps: int | None = None
    save_every: int = 0  # steps between checkpoint-<step>/ (0: only final/)
    seed: int = 0
    device: str = "auto"  # auto: CUDA if available | cpu (forces the CPU even with a GPU)
    dtype: str = "auto"  # weights: auto = fp32 (master weights; bf16 autocast on GPU) | bf16 | fp32
    mixed_precision: str = "auto"  # auto = bf16 autocast on a bf16 GPU, else none | bf16 | no
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the transformer body
    group_by_length: bool = True
    chunk_size: int = 1024  # completion tokens per LM-head chunk (CompletionLogps)
    ref_batch_size: int = 8
    ref_cache_dir: str | None = None  # default: <output>/../.ref_cache (shared by sibling runs)
    verify_logps: bool = True  # check chunked log-probs against full logits on the first batch
    resume: bool = False
    trust_remote_code: bool = False
    progress: bool = True
    data_cfg: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if isinstance(self.data_cfg, dict):
            self.data_cfg = DataConfig(**self.data_cfg)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad option."""
        checks = [
            (self.objective in TRAIN_OBJECTIVES, f"objective must be one of {', '.join(TRAIN_OBJECTIVES)}"),
            (bool(self.model), "model is required"),
            (bool(self.data), "data is required"),
            (bool(self.output), "output is required"),
            (self.beta > 0, "beta must be > 0"),
            (self.lam >= 0, "lam must be >= 0"),
            (self.reduce in ("sum", "mean"), "reduce must be 'sum' or 'mean'"),
            (self.optimizer in ("rmsprop", "adamw"), "optimizer must be 'rmsprop' or 'adamw'"),
            (self.scheduler in ("constant", "cosine"), "scheduler must be 'constant' or 'cosine'"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.micro_batch_size is None or self.micro_batch_size >= 1, "micro_batch_size must be >= 1"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.save_every >= 0, "save_every must be >= 0"),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
            (self.mixed_precision in ("auto", "bf16", "no"), "mixed_precision must be auto, bf16 or no"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _merge(cfg: TrainConfig, updates: dict, where: str) -> TrainConfig:
    """Apply a dict of options (a preset or YAML); unknown keys fail naming ``where`` and the key."""
    names = {f.name for f in fields(TrainConfig)}
    data_names = {f.name for f in fields(DataConfig)}
    top, data = {}, {}
    for key, value in updates.items():
        key = key.replace("-", "_")
        if key == "data_cfg" or (key == "data" and isinstance(value, dict)):
            for k, v in value.items():
                if k not in data_names:
                    raise ValueError(f"{where}: unknown data option {k!r}")
                data[k] = v
        elif key in data_names and key not in names:
            data[key] = value  # flat data options (max_length: 512) are accepted too
        elif key in names:
            top[key] = value
        else:
            raise ValueError(f"{where}: unknown option {key!r}")
    out = replace(cfg, **top)
    if data:
        out.data_cfg = replace(cfg.data_cfg, **data)
    return out


def apply_preset(cfg: TrainConfig, name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return _merge(cfg, PRESETS[name], f"preset {name}")


def load_yaml_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML file of options (same names as the dataclass fields) on top of ``base``."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of options at the top level")
    if "preset" in raw:
        base = apply_preset(base or TrainConfig(), raw.pop("preset"))
    return _merge(base or TrainConfig(), raw, str(path))


def build_config(overrides: dict, *, preset: str | None = None, config_file: str | None = None) -> TrainConfig:
    """Defaults < preset < YAML file < ``overrides`` (explicit CLI flags; None values are ignored)."""
    cfg = TrainConfig()
    if preset:
        cfg = apply_preset(cfg, preset)
    if config_file:
        cfg = load_yaml_config(config_file, cfg)
    cfg = _merge(cfg, {k: v for k, v in overrides.items() if v is not None}, "command line")
    return cfg.validate()


def dump_yaml(cfg: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
