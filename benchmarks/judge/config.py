"""The judge stage's settings (one typed config: `srdpo-eval judge` flags and reproduce's `judge:` section
derive from it) and the one way to build a judge backend from them."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import judges
from contracts.settings import option


@dataclass
class JudgeConfig:
    backend: str = option("openai", choices=judges.names, flag="--judge-backend",
                          help="; ".join(f"{b.name}: {b.summary}" for b in judges.JUDGE_BACKENDS.values()))
    model: str | None = option(None, flag="--judge-model", required=True,
                               help="judge model name (e.g. gpt-4); with the local backend a checkpoint "
                                    "directory, or 'default' for the default model")
    base_url: str | None = option(None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or OpenAI)")
    api_key_env: str = option("OPENAI_API_KEY", help="environment variable holding the API key")
    concurrency: int = option(16, ge=1, help="requests in flight")
    timeout: float = option(120.0, gt=0, help="seconds per request")
    max_retries: int = option(8, ge=0, help="retries of a transient failure (429, 5xx, timeout, bad reply)")
    connect_failures: int = option(3, ge=1, help="refused connections in a row that end the run")
    tie_band: float = option(0.0, ge=0, le=0.49, help="local judge: also a tie when its pairwise P(model_1 "
                                                     "better) is within 0.5 ± this (docs/method.md)")


# Settings that do not change a judgment: how the judge is reached (the judge is its model, as in FastChat's
# file names) and how hard the client tries.
EXECUTION_ONLY = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries", "connect_failures")


def result_key(cfg: JudgeConfig) -> dict:
    """What decides a judgment besides the answers and the prompt: the judge (its name, a local judge's
    reply version and tie band). The one definition: reproduce keys its judge units by it."""
    key = {"judge": judge_name(cfg), "backend": cfg.backend}
    if judges.get_judge_backend(cfg.backend).calibrated:
        key.update(reply_version=reply_version(cfg), tie_band=cfg.tie_band)
    return key


def local_judge_path(model: str) -> str:
    """A local judge's checkpoint: a directory, or 'default' for the default model (converted once)."""
    if model == "default":
        from trainer.default_model import default_model_checkpoint

        return str(default_model_checkpoint())
    return model


def judge_name(cfg: JudgeConfig) -> str:
    """The judge's id in judgment files (contracts.ids), known without building the backend."""
    from contracts.ids import judge_id

    if not judges.get_judge_backend(cfg.backend).local:
        return judge_id(cfg.backend, cfg.model)
    from benchmarks.judge.local import local_precision

    return judge_id(cfg.backend, local_judge_path(cfg.model), local_precision())


def reply_version(cfg: JudgeConfig) -> str | None:
    """The version of a local judge's replies (part of its cache keys, with its dtype); None for an
    OpenAI judge."""
    if not judges.get_judge_backend(cfg.backend).calibrated:
        return None
    from benchmarks.judge import local

    return local.reply_version(local.local_precision())


def _local(cfg: JudgeConfig):
    from benchmarks.judge.local import LocalJudge
    from trainer.modeling import check_model_path

    return LocalJudge(check_model_path(local_judge_path(cfg.model)), tie_band=cfg.tie_band)


def _openai(cfg: JudgeConfig):
    from benchmarks.judge.openai_backend import OpenAIBackend

    return OpenAIBackend(cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env, timeout=cfg.timeout,
                         max_retries=cfg.max_retries, connect_failures=cfg.connect_failures)


# How each backend of contracts.judges is built from the judge's settings.
MAKERS = {"openai": _openai, "local": _local}


def make_backend(cfg: JudgeConfig):
    """The backend that ``cfg`` describes (a fresh one: a judge run closes its connections when it ends)."""
    judges.get_judge_backend(cfg.backend)
    return MAKERS[cfg.backend](cfg)
