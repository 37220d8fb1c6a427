"""Open LLM Leaderboard (v1) scores through lm-eval used as a library.

One table (``LEADERBOARD_TASKS``) holds the six tasks with the leaderboard's settings. Each
(checkpoint, task) is one ``lm_eval.simple_evaluate`` call whose result is written at once to
``RUN_DIR/leaderboard/<model_id>/<task>.json``; a rerun reuses a result when the checkpoint content
(a streamed SHA-256 of its weight, config and tokenizer files) and the settings are unchanged.
``leaderboard/scores.csv`` collects the scores in percent, as the paper's Table 3.

Offline: before lm-eval touches the Hub, a 2-second TCP probe of the Hub's host decides; when it fails
(or ``cfg.offline`` is True) ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are set for the call, so a
dataset missing from the local cache fails at once with a message instead of waiting on timeouts.

Multi-GPU (data parallel, as lm-eval's HF backend supports it through accelerate):
``accelerate launch -m srdpo_eval.cli leaderboard CKPT --output RUN_DIR``; every rank plans the same
work, only rank 0 writes results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from contracts.benches import LEADERBOARD_TASKS, TASKS, LeaderboardTask
from contracts.errors import UserError
from contracts.files import Lock, write_json, written
from contracts.settings import option
from contracts.hashing import checkpoint_hash as _content_hash
from contracts.hashing import sha256_file
from contracts.ids import model_id_for_checkpoint, safe_name
from contracts.run_dir import ModelEntry, RunDir, read_models
from contracts.tables import SCORES_AVERAGE, SCORES_INDEX


class LeaderboardError(UserError):
    """Bad input or an unreachable resource, with a message saying what to do."""


class DatasetsUnavailable(LeaderboardError):
    """Offline, and a task's dataset is not in the local cache. ``until``: :func:`availability` when this was
    found (nothing will change before it does); ``first``: False when this process already said so."""

    def __init__(self, msg: str, until: str | None = None, first: bool = True):
        super().__init__(msg)
        self.until, self.first = until, first


TaskSpec = LeaderboardTask  # one row of the task table (contracts.benches)
TASKS_BY_NAME = TASKS


@dataclass
class LeaderboardConfig:
    """Settings of a leaderboard run; all but the execution ones key the result reuse."""

    tasks: tuple[str, ...] = option(tuple(t.name for t in LEADERBOARD_TASKS), choices=tuple(TASKS),
                                    metavar="TASK,...", help="leaderboard tasks")
    limit: int | float | None = option(None, gt=0, help="documents per (sub)task (a fraction if < 1); "
                                                        "smoke runs only, not comparable with the paper")
    batch_size: int | str = option("auto", valid=lambda b: None if (isinstance(b, int) and b >= 1) or b == "auto"
                                   or (isinstance(b, str) and b.startswith("auto:")) else
                                   "expected a positive integer or 'auto'",
                                   help="an integer, or 'auto' (lm-eval finds the largest that fits)")
    max_batch_size: int = option(64, ge=1)
    backend: str = option("hf", choices=("hf", "vllm"))
    dtype: str = option("auto", choices=("auto", "float32", "bfloat16", "float16", "fp32", "bf16"),
                        help="auto: bf16 on a GPU that has it, float32 on CPU")
    device: str | None = option(None, choices=("cpu", "cuda"), help="default: cuda if available")
    num_fewshot: dict[str, int] = option(default_factory=dict, cli=False,
                                         help="per-task shot overrides (not comparable with the paper)")
    include_path: tuple[str, ...] = option((), metavar="DIR,...", help="directories of extra/local lm-eval "
                                                                      "task YAMLs")
    include_defaults: bool = option(True, help="false: only tasks from include_path (fully local runs)")
    hf_datasets_cache: str | None = option(None, metavar="DIR", flags=("--datasets-cache",),
                                           help="HF_DATASETS_CACHE for the call")
    offline: bool | None = option(None, help="never contact the Hub (default: decided by a 2 s probe)")
    bootstrap_iters: int = option(1000, ge=0, help="stderr of non-mean metrics only")
    seed: int = option(1234, ge=0, help="lm-eval's few-shot sampling seed (its default)")
    gen_max_new_tokens: int | None = option(None, ge=1, help="override generate_until length (tests)")

    def check(self) -> None:
        """(Each option is checked as it is set: nothing across options to check.)"""


# ---------------------------------------------------------------------------------------- inputs


def task_specs(cfg: LeaderboardConfig) -> list[TaskSpec]:
    """The table rows for ``cfg.tasks`` with ``cfg.num_fewshot`` overrides applied."""
    unknown = [t for t in cfg.tasks if t not in TASKS_BY_NAME]
    if unknown:
        raise LeaderboardError(
            f"tasks: unknown leaderboard task {unknown[0]!r}: use some of {', '.join(TASKS_BY_NAME)}")
    bad = [t for t in cfg.num_fewshot if t not in TASKS_BY_NAME]
    if bad:
        raise LeaderboardError(f"num_fewshot override for unknown task {bad[0]!r}")
    out = []
    for name in cfg.tasks:
        spec = TASKS_BY_NAME[name]
        if name in cfg.num_fewshot:
            spec = TaskSpec(**{**asdict(spec), "num_fewshot": int(cfg.num_fewshot[name])})
        out.append(spec)
    return out


def check_checkpoint(path: str | Path) -> Path:
    """A local Hugging Face checkpoint directory with safetensors weights, or a LeaderboardError."""
    p = Path(path)
    if not p.is_dir():
        raise LeaderboardError(
            f"{p}: not a directory; give a local Hugging Face checkpoint directory "
            f"(download hub models first, e.g. `huggingface-cli download ORG/NAME --local-dir DIR`)")
    if not (p / "config.json").is_file():
        raise LeaderboardError(f"{p} is not a Hugging Face model checkpoint (no config.json in it)")
    if not any(p.glob("*.safetensors")):
        raise LeaderboardError(
            f"{p}: no *.safetensors weights (this project loads safetensors only; re-save the model "
            f"with save_pretrained(safe_serialization=True))")
    return p


def checkpoint_hash(path: str | Path, cache_file: Path | None = None) -> str:
    """SHA-256 over the checkpoint's content files (contracts.hashing), cached by (path, size, mtime)."""
    return _content_hash(check_checkpoint(path).resolve(), cache_file)


def _include_hash(paths: tuple[str, ...]) -> str | None:
    """Hash of the local task files, so an edited task YAML or data file recomputes."""
    if not paths:
        return None
    h = hashlib.sha256()
    for root in paths:
        r = Path(root)
        if not r.exists():
            raise LeaderboardError(f"--include-path {r}: no such directory")
        for f in sorted(x for x in (r.rglob("*") if r.is_dir() else [r]) if x.is_file()):
            if "__pycache__" in f.parts:
                continue
            h.update(f"{f.relative_to(r) if r.is_dir() else f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# Settings that do not change a score: batching, where it runs, where datasets are cached, whether the hub
# is asked, and the bootstrap of stderrs (the score is a plain mean).
EXECUTION_ONLY = ("batch_size", "max_batch_size", "device", "hf_datasets_cache", "offline", "bootstrap_iters")


def result_key(cfg: LeaderboardConfig) -> dict[str, Any]:
    """What decides a model's scores besides its checkpoint: the tasks and their shots, the documents, the
    backend, the dtype resolved on this machine, the seed, local task files by content, lm-eval's version.
    The one definition: reproduce keys its units by it, and each (checkpoint, task) result by
    :func:`result_settings`."""
    return {"tasks": list(cfg.tasks), "num_fewshot": dict(cfg.num_fewshot), "limit": cfg.limit,
            "backend": cfg.backend, "dtype": _resolved_dtype(cfg), "seed": cfg.seed,
            "gen_max_new_tokens": cfg.gen_max_new_tokens, "include_defaults": cfg.include_defaults,
            "include_sha256": _include_hash(cfg.include_path), "lm_eval_version": _lm_eval_version()}


def result_settings(spec: TaskSpec, cfg: LeaderboardConfig, ckpt_hash: str) -> dict[str, Any]:
    """Everything that decides a (checkpoint, task) score; any change means recompute."""
    task = {k: v for k, v in asdict(spec).items() if k not in ("label", "title")}  # not display names
    rest = {k: v for k, v in result_key(cfg).items() if k not in ("tasks", "num_fewshot")}  # in ``task``
    return {"checkpoint_sha256": ckpt_hash, "task": task, **rest}


def _resolved_dtype(cfg: LeaderboardConfig) -> str:
    from trainer.modeling import resolve_dtype

    return str(resolve_dtype(cfg.dtype, _device(cfg))).removeprefix("torch.")


def _device(cfg: LeaderboardConfig) -> str:
    if cfg.device:
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------- offline


def hub_reachable(timeout: float = 2.0) -> bool:
    """A quick TCP connect to the Hub's host (HF_ENDPOINT or huggingface.co); no HTTP, no retries."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in {"1", "true", "yes", "on"}


def decide_offline(cfg: LeaderboardConfig) -> bool:
    if cfg.offline is not None:
        return cfg.offline
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("HF_DATASETS_OFFLINE")):
        return True
    return not hub_reachable()


@contextlib.contextmanager
def hub_mode(offline: bool, datasets_cache: str | None = None) -> Iterator[None]:
    """Set the Hub's offline flags and the datasets cache for a block, in the environment and in the
    libraries' constants (they read the variables once, at import); both are restored afterwards."""
    import datasets.config
    import huggingface_hub.constants

    env: dict[str, str] = {}
    attrs: list[tuple[Any, str, Any]] = []
    if datasets_cache:
        env["HF_DATASETS_CACHE"] = datasets_cache
        attrs.append((datasets.config, "HF_DATASETS_CACHE", Path(datasets_cache)))
    if offline:
        env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        attrs += [(huggingface_hub.constants, "HF_HUB_OFFLINE", True), (datasets.config, "HF_HUB_OFFLINE", True),
                  (datasets.config, "HF_DATASETS_OFFLINE", True)]
    saved_env = {k: os.environ.get(k) for k in env}
    saved_attrs = [(m, a, getattr(m, a)) for m, a, _ in attrs]
    os.environ.update(env)
    for m, a, v in attrs:
        setattr(m, a, v)
    try:
        yield
    finally:
        for m, a, v in saved_attrs:
            setattr(m, a, v)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def availability(cfg: LeaderboardConfig, offline: bool | None = None) -> str | None:
    """What decides whether the tasks' datasets load offline: the tasks and the Hugging Face caches (their
    entries and modification times). None online, where anything may have changed."""
    if not (decide_offline(cfg) if offline is None else offline):
        return None
    from contracts.hashing import stat_digest

    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    caches = [Path(cfg.hf_datasets_cache or os.environ.get("HF_DATASETS_CACHE") or home / "datasets"),
              Path(os.environ.get("HF_HUB_CACHE") or home / "hub"), *map(Path, cfg.include_path)]
    seen = stat_digest([*caches, *(e for c in caches if c.is_dir() for e in c.iterdir())])
    return hashlib.sha256(json.dumps([cfg.tasks, cfg.include_defaults, seen]).encode()).hexdigest()


_UNAVAILABLE: dict[str, str] = {}  # availability() -> why the datasets did not load (said once per process)


def note_unavailable(out_dir: str | Path, reason: str | None) -> None:
    """leaderboard/unavailable.json says why there are no scores (the report quotes it); gone once there are."""
    path = RunDir(out_dir).leaderboard_unavailable
    if reason is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {"reason": reason}, indent=1)


# ------------------------------------------------------------------------------------ lm-eval glue


_TASK_MANAGERS: dict[tuple, Any] = {}  # one per process and task set: indexing lm-eval's tasks takes 10-40 s


def make_task_manager(cfg: LeaderboardConfig):
    """lm-eval's TaskManager over its own tasks (unless disabled) and ``cfg.include_path``; built once per
    process for the same task files (the key holds their content hash, so an edited YAML is re-read)."""
    from lm_eval.tasks import TaskManager

    for p in cfg.include_path:
        if not Path(p).exists():
            raise LeaderboardError(f"--include-path {p}: no such directory")
    key = (tuple(cfg.include_path), _include_hash(cfg.include_path), cfg.include_defaults)
    if key not in _TASK_MANAGERS:
        _TASK_MANAGERS[key] = TaskManager(include_path=list(cfg.include_path) or None,
                                          include_defaults=cfg.include_defaults)
    return _TASK_MANAGERS[key]


def _dataset_paths(loaded_cfg: dict[str, Any]) -> str:
    return f"{loaded_cfg.get('dataset_path')}" + (
        f" ({loaded_cfg['dataset_name']})" if loaded_cfg.get("dataset_name") else "")


def load_task(spec: TaskSpec, task_manager, *, offline: bool):
    """Build lm-eval's Task/Group for ``spec`` (this loads its datasets); clear errors on failure."""
    entry = task_manager.task_index.get(spec.name)
    if entry is None:
        raise LeaderboardError(
            f"task {spec.name!r} is not in lm-eval's task registry"
            + (" nor in --include-path" if task_manager.include_path else "")
            + ": check the lm-eval version (this project pins lm-eval 0.4.13) or add the task YAML "
              "with --include-path DIR")
    try:
        return task_manager._load_spec(spec.name)
    except Exception as err:  # datasets raises several types for a missing dataset
        leaves = _leaf_configs(task_manager, spec.name)
        where = ", ".join(sorted({_dataset_paths(c) for c in leaves})[:3]) or spec.name
        if offline:
            raise DatasetsUnavailable(
                f"task {spec.name}: dataset {where} is not in the local Hugging Face cache and the "
                f"machine is offline: run once online, or set HF_DATASETS_CACHE (--datasets-cache) to "
                f"a cache that has it, or give local task files with --include-path "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        raise LeaderboardError(
            f"task {spec.name}: loading dataset {where} failed ({type(err).__name__}: {err})") from err


def _leaf_configs(task_manager, name: str) -> list[dict[str, Any]]:
    """Raw YAML configs of a task or of a group's leaf tasks (from the index; nothing is loaded)."""
    idx, out, seen, stack = task_manager.task_index, [], set(), [name]
    while stack:
        n = stack.pop()
        if n in seen or n not in idx:
            continue
        seen.add(n)
        e = idx[n]
        cfg = e.cfg or {}
        if e.kind.name == "GROUP":  # children: task names, tags or inline task dicts
            subs = cfg.get("task", [])
            stack.extend(c if isinstance(c, str) else c.get("task", "") for c in (subs if isinstance(subs, list) else [subs]))
        elif e.kind.name == "TAG":
            stack.extend(k for k, v in idx.items() if n in v.tags)
        else:
            out.append(cfg)
    return out


def make_lm(checkpoint: Path, cfg: LeaderboardConfig):
    """lm-eval model for a local checkpoint: HFLM by default, vLLM if asked and installed."""
    dtype, device = _resolved_dtype(cfg), _device(cfg)
    if cfg.backend == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=str(checkpoint), dtype=dtype, device=device, batch_size=cfg.batch_size,
                    max_batch_size=cfg.max_batch_size, trust_remote_code=False)
    if cfg.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise LeaderboardError("backend 'vllm' asked for but vllm is not installed: "
                                   "`pip install vllm` (GPU machines) or use --backend hf")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(checkpoint), dtype=dtype, batch_size=cfg.batch_size,
                    trust_remote_code=False, max_batch_size=cfg.max_batch_size)
    raise LeaderboardError(f"unknown backend {cfg.backend!r}: use hf or vllm")


def _leaf_names(group_subtasks: dict[str, list[str]], name: str) -> list[str]:
    out: list[str] = []
    for child in group_subtasks.get(name, []):
        out.extend(_leaf_names(group_subtasks, child) if child in group_subtasks else [child])
    return out


def score_from_results(spec: TaskSpec, results: dict[str, Any]) -> float:
    """The leaderboard score (a fraction) of ``spec`` from lm-eval's ``simple_evaluate`` output."""
    key = f"{spec.metric},{spec.filter}"
    res = results["results"]
    if spec.mean_of_subtasks:
        leaves = _leaf_names(results.get("group_subtasks", {}), spec.name)
        if not leaves:
            raise LeaderboardError(f"{spec.name}: lm-eval reported no subtasks to average")
        return float(sum(res[t][key] for t in leaves) / len(leaves))
    if spec.name not in res or key not in res[spec.name]:
        have = sorted(k for k in res.get(spec.name, {}) if "," in k)
        raise LeaderboardError(f"{spec.name}: lm-eval reported no {key!r} (it reported {have})")
    return float(res[spec.name][key])


def _task_hashes(samples: dict[str, list[dict]]) -> dict[str, str]:
    """Per-task hash of the evaluated documents, prompts and targets (as lm-eval's tracker does)."""
    from lm_eval.utils import hash_string

    return {t: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in ss))
            for t, ss in samples.items()}


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def _stable_json(x: Any, **kw) -> str:
    """JSON of an lm-eval record without memory addresses: lm-eval writes a function it cannot find the
    source of as "<function f at 0x7f...>", which would make records and config hashes differ between
    processes."""
    return _ADDRESS.sub(">", json.dumps(x, default=str, **kw))


def _jsonable(x: Any) -> Any:
    return json.loads(_stable_json(x))


def run_task(lm, spec: TaskSpec, cfg: LeaderboardConfig, task_manager, *, offline: bool,
             task_obj=None) -> dict | None:
    """One ``simple_evaluate`` call; returns the JSON record body (None on non-zero ranks)."""
    import lm_eval

    if task_obj is None:
        task_obj = load_task(spec, task_manager, offline=offline)
    generative = any(c.get("output_type") == "generate_until" for c in _leaf_configs(task_manager, spec.name))
    gen_kwargs = {"max_gen_toks": cfg.gen_max_new_tokens} if cfg.gen_max_new_tokens and generative else None
    t0 = time.time()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[task_obj], num_fewshot=spec.num_fewshot, limit=cfg.limit,
        bootstrap_iters=cfg.bootstrap_iters, log_samples=True, task_manager=task_manager,
        gen_kwargs=gen_kwargs, random_seed=0, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed)
    if out is None:
        return None
    samples = out.pop("samples", {})
    raw = {k: out[k] for k in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
                               "higher_is_better", "n-samples", "config") if k in out}
    return {
        "score": score_from_results(spec, out),
        "lm_eval_version": lm_eval.__version__,
        "task_versions": out.get("versions", {}),
        "task_config_sha256": {t: hashlib.sha256(_stable_json(c, sort_keys=True).encode())
                               .hexdigest() for t, c in out.get("configs", {}).items()},
        "task_hashes": _task_hashes(samples),
        "n_samples": {t: v.get("effective", v) if isinstance(v, dict) else v
                      for t, v in out.get("n-samples", {}).items()},
        "seconds": round(time.time() - t0, 2),
        "raw": _jsonable(raw),
    }


# ---------------------------------------------------------------------------------- orchestration


def result_path(run_dir: str | Path, model_id: str, task: str) -> Path:
    return RunDir(run_dir).leaderboard_result(model_id, task)


def _reusable(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn file is recomputed
    return rec if rec.get("settings_key") == key and "score" in rec else None


def evaluate_checkpoints(checkpoints: list[tuple[str, str | Path]], cfg: LeaderboardConfig,
                         out_dir: str | Path, *, scores_csv: bool = True) -> dict[str, dict[str, float]]:
    """Evaluate ``[(model_id, checkpoint_dir), ...]`` on ``cfg.tasks``; return {model_id: {task: score}}.

    Results are written per (checkpoint, task) as they finish and reused on rerun; scores.csv is
    rewritten at the end from all results under ``out_dir/leaderboard`` (unless ``scores_csv`` is False:
    `reproduce` runs models side by side and writes it once, after them).
    """
    specs = task_specs(cfg)
    if cfg.backend not in ("hf", "vllm"):
        raise LeaderboardError(f"unknown backend {cfg.backend!r}: use hf or vllm")
    ids = [m for m, _ in checkpoints]
    if len(set(map(safe_name, ids))) != len(ids):
        raise LeaderboardError(f"model ids must be distinct (as file names): {ids}")
    # Plan first (every rank the same), then run: nothing written mid-plan changes the plan.
    plan, scores = [], {m: {} for m in ids}
    for model_id, ckpt in checkpoints:
        ckpt = check_checkpoint(ckpt)
        h = checkpoint_hash(ckpt, RunDir(out_dir).hash_cache)
        for spec in specs:
            settings = result_settings(spec, cfg, h)
            key = _settings_key(settings)
            path = result_path(out_dir, model_id, spec.name)
            rec = _reusable(path, key)
            if rec is not None:
                scores[model_id][spec.name] = rec["score"]
            else:
                plan.append((model_id, ckpt, spec, settings, key, path))

    if plan:
        try:
            # one writer per model's results (only the main process writes under accelerate)
            with contextlib.ExitStack() as locks:
                if _is_main_process():
                    for m in dict.fromkeys(p[0] for p in plan):
                        d = RunDir(out_dir).leaderboard_model(m)
                        locks.enter_context(Lock(d, what=f"leaderboard results {d}"))
                _run_plan(plan, cfg, scores)
        except DatasetsUnavailable as e:
            if _is_main_process():
                note_unavailable(out_dir, str(e))
            raise
        if _is_main_process():
            note_unavailable(out_dir, None)
    if scores_csv and _is_main_process():
        write_scores_csv(out_dir)
    return scores


def _run_plan(plan: list[tuple], cfg: LeaderboardConfig, scores: dict[str, dict[str, float]]) -> None:
    """Every (model, task) of ``plan``, each result written as it finishes; models loaded one at a time."""
    from contracts.progress import bar as progress_bar

    offline = decide_offline(cfg)
    until = availability(cfg, offline)  # None online
    if until in _UNAVAILABLE:  # found in this process already: nothing has changed since
        raise DatasetsUnavailable(_UNAVAILABLE[until], until, first=False)
    with hub_mode(offline, cfg.hf_datasets_cache):
        tm = make_task_manager(cfg)
        # Build every task (this loads its data) before any model: unknown tasks and unreachable
        # datasets fail at once. The first checkpoint uses these objects, later ones rebuild them.
        specs_todo = {p[2].name: p[2] for p in plan}.values()
        try:
            preloaded = {s.name: load_task(s, tm, offline=offline) for s in specs_todo}
        except DatasetsUnavailable as e:
            if until is not None:
                _UNAVAILABLE[until] = str(e)
            e.until = until
            raise
        lm, lm_ckpt = None, None
        bar = progress_bar(plan, desc="leaderboard", unit="task")
        for model_id, ckpt, spec, settings, key, path in bar:
            bar.set_postfix_str(f"{model_id}/{spec.name}")
            if lm_ckpt != ckpt:
                lm = None  # free the previous model before loading the next
                lm, lm_ckpt = make_lm(ckpt, cfg), ckpt
            body = run_task(lm, spec, cfg, tm, offline=offline, task_obj=preloaded.pop(spec.name, None))
            if body is None:  # non-zero rank under accelerate
                continue
            rec = {"model_id": model_id, "checkpoint": str(ckpt), "task": spec.name,
                   "metric": f"{spec.metric},{spec.filter}", "num_fewshot": spec.num_fewshot, "settings": settings,
                   "settings_key": key, "execution": {"batch_size": cfg.batch_size, "device": _device(cfg)}, **body}
            write_json(path, rec, indent=1, default=str)
            scores[model_id][spec.name] = rec["score"]
        del lm


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def evaluate_checkpoint(checkpoint: str | Path, cfg: LeaderboardConfig, out_dir: str | Path, *,
                        model_id: str) -> dict[str, float]:
    """Scores (fractions) of one checkpoint on ``cfg.tasks``; see ``evaluate_checkpoints``."""
    return evaluate_checkpoints([(model_id, checkpoint)], cfg, out_dir)[model_id]


def run_checkpoints(train_run_dir: str | Path) -> list[tuple[str, Path]]:
    """``[(model_id, path)]`` for ``checkpoint-<step>/`` (by step) and ``final/`` of a training run, with the
    ids every stage gives them (contracts.ids: ``<run>-p<pairs seen>`` and ``<run>``)."""
    d = Path(train_run_dir)
    if not d.is_dir():
        raise LeaderboardError(f"{d}: no such training run directory")
    steps = []
    for c in d.glob("checkpoint-*"):
        try:
            steps.append((int(c.name.split("-", 1)[1]), c))
        except ValueError:
            continue
    out = [(model_id_for_checkpoint(c), c) for _, c in sorted(steps)]
    if (d / "final").is_dir():
        out.append((model_id_for_checkpoint(d / "final"), d / "final"))
    if not out:
        raise LeaderboardError(f"{d}: no checkpoint-<step>/ or final/ directories in it")
    return out


def models_of_run(run_dir: str | Path, run: str | None = None) -> list[ModelEntry]:
    """The models.json entries of a run directory (all, or those of training run ``run``)."""
    entries = read_models(RunDir(run_dir).models)
    return [e for e in entries if run is None or e.run == run]


def evaluate_models(entries: list[ModelEntry], cfg: LeaderboardConfig,
                    out_dir: str | Path) -> dict[str, dict[str, float]]:
    """Evaluate models.json entries (e.g. every checkpoint of a run, for Figure 3)."""
    return evaluate_checkpoints([(e.model_id, e.path) for e in entries], cfg, out_dir)


# ------------------------------------------------------------------------------------------ table


def collect_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """All result records under ``out_dir/leaderboard``; a damaged file fails naming it."""
    recs = []
    for f in sorted(RunDir(out_dir).leaderboard.glob("*/*.json")):
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise LeaderboardError(f"{f}: not valid JSON ({err}); delete it to recompute") from err
        for k in ("model_id", "task", "score"):
            if k not in rec:
                raise LeaderboardError(f"{f}: missing field {k!r}; delete it to recompute")
        recs.append(rec)
    return recs


def scores_table(out_dir: str | Path):
    """pandas DataFrame: one row per model_id, a column per task in percent (contracts.tables), and the
    average. A task not run is NaN; the average is the plain mean of the six, only for complete rows."""
    import pandas as pd

    cols = [t.name for t in LEADERBOARD_TASKS]
    rows: dict[str, dict[str, float]] = {}
    for rec in collect_results(out_dir):
        if rec["task"] in TASKS:
            rows.setdefault(rec["model_id"], {})[rec["task"]] = 100.0 * float(rec["score"])
    df = pd.DataFrame.from_dict(rows, orient="index", columns=cols, dtype=float)
    df.index.name = SCORES_INDEX
    df[SCORES_AVERAGE] = df[cols].mean(axis=1, skipna=False)  # NaN unless all six are there
    return df


def write_scores_csv(out_dir: str | Path) -> Path:
    path = RunDir(out_dir).scores
    df = scores_table(out_dir)
    with written(path) as tmp:
        df.to_csv(tmp, float_format="%.4f")
    return path


def format_table(df) -> str:
    """The scores as a readable text table (2 decimals, '-' where missing)."""
    if df.empty:
        return "(no leaderboard results)"
    labels = {t.name: t.label for t in LEADERBOARD_TASKS}
    return df.rename(columns=labels).to_string(float_format=lambda v: f"{v:.2f}", na_rep="-")

