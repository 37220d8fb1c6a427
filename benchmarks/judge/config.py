"""The judge stage's settings (one typed config: `srdpo-eval judge` flags and reproduce's `judge:` section
derive from it) and the one way to build a judge backend from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts import judges
from contracts.settings import option


@dataclass
class JudgeConfig:
    backend: str = option("openai", choices=judges.names, flag="--judge-backend",
                          help="; ".join(f"{b.name}: {b.summary}" for b in judges.JUDGE_BACKENDS.values()))
    model: str | None = option(None, flag="--judge-model", required=True,
                               help="judge model name (e.g. gpt-4); with the local backend a checkpoint "
                                    "directory, or 'default' for the default model")
    judge_name: str | None = option(None, help="the judge's name in judgment files and tables (default: the model, "
                                               "shortened and made file-safe when it is a path)")
    base_url: str | None = option(None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or OpenAI)")
    api_key_env: str = option("OPENAI_API_KEY", help="environment variable holding the API key")
    concurrency: int | str = option("auto", metavar="N|auto",
                                    help="requests in flight: auto adapts to the server (a local one-slot server gets "
                                         "1-3, OpenAI up to 64), or a fixed number")
    max_tokens: int = option(2048, ge=1, help="longest judge reply, in tokens (FastChat's 2048; a local server "
                                              "needs prompt + max_tokens within its context)")
    stream: bool = option(True, help="stream replies: a request then waits --queue-timeout for its reply to start "
                                     "and --timeout between its pieces (servers without streaming: --no-stream)")
    timeout: float = option(120.0, gt=0, help="seconds of silence once a reply has started (streamed), or for the "
                                              "whole request (--no-stream)")
    queue_timeout: float = option(1800.0, gt=0, help="seconds a streamed request may wait for the server to start "
                                                     "answering (it may be queued behind others)")
    max_retries: int = option(8, ge=0, help="retries of a transient failure (429, 5xx, timeout, bad reply)")
    connect_failures: int = option(3, ge=1, help="refused connections in a row that end the run")
    tie_band: float = option(0.0, ge=0, le=0.49, help="local judge: also a tie when its pairwise P(model_1 "
                                                     "better) is within 0.5 ± this (docs/method.md)")


    def check(self, where: str = "concurrency") -> None:
        """``where``: how the setting is named to the user (``--concurrency``, ``FILE: judge.concurrency``)."""
        from benchmarks.judge.window import parse_concurrency
        from contracts.settings import ConfigError

        try:
            parse_concurrency(self.concurrency)
        except ValueError as e:
            raise ConfigError(str(e).replace("concurrency", where, 1)) from None


# Settings that do not change a judgment: how the judge is reached (the judge is its model, as in FastChat's
# file names) and how hard the client tries.
EXECUTION_ONLY = ("base_url", "api_key_env", "concurrency", "stream", "timeout", "queue_timeout", "max_retries",
                  "connect_failures")


def result_key(cfg: JudgeConfig) -> dict:
    """What decides a judgment besides the answers and the prompt: the judge (its name, a local judge's
    reply version and tie band). The one definition: reproduce keys its judge units by it."""
    key = {"judge": judge_name(cfg), "backend": cfg.backend}
    if not judges.get_judge_backend(cfg.backend).local:  # a local judge generates no text
        key.update(model=cfg.model, max_tokens=cfg.max_tokens)
    if judges.get_judge_backend(cfg.backend).calibrated:
        key.update(reply_version=reply_version(cfg), tie_band=cfg.tie_band)
    return key


def local_judge_path(model: str, *, convert: bool = True) -> str:
    """A local judge's checkpoint: a directory, or 'default' for the default model (converted once;
    ``convert`` False: only its path, as a dry run needs)."""
    if model == "default":
        from trainer.default_model import default_model_checkpoint

        return str(default_model_checkpoint(convert=convert))
    return model


def judge_name(cfg: JudgeConfig, *, convert: bool = True) -> str:
    """The judge's id in judgment files (contracts.ids), known without building the backend."""
    from contracts.ids import judge_id

    if not judges.get_judge_backend(cfg.backend).local:
        return judge_id(cfg.backend, cfg.judge_name or cfg.model)
    from benchmarks.judge.local import local_precision

    return judge_id(cfg.backend, local_judge_path(cfg.model, convert=convert), local_precision())


def plan_args(cfg: JudgeConfig) -> dict:
    """What a dry run (benchmarks.judge.run.judge_plan) needs to name, count and price the judge without
    building it: nothing is converted, loaded or downloaded."""
    import os

    if judges.get_judge_backend(cfg.backend).local:
        path = local_judge_path(cfg.model, convert=False)
        return {"judge_model": judge_name(cfg, convert=False), "reply_version": reply_version(cfg),
                "tokenizer": path if (Path(path) / "tokenizer_config.json").is_file() else None}
    return {"judge_model": cfg.model, "name": judge_name(cfg), "max_tokens": cfg.max_tokens,
            "base_url": cfg.base_url or os.environ.get("OPENAI_BASE_URL")}


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

    from benchmarks.judge.window import parse_concurrency

    return OpenAIBackend(cfg.model, name=judge_name(cfg), base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                         timeout=cfg.timeout, queue_timeout=cfg.queue_timeout, stream=cfg.stream,
                         concurrency=parse_concurrency(cfg.concurrency), max_tokens=cfg.max_tokens,
                         max_retries=cfg.max_retries, connect_failures=cfg.connect_failures)


# How each backend of contracts.judges is built from the judge's settings.
MAKERS = {"openai": _openai, "local": _local}


def make_backend(cfg: JudgeConfig):
    """The backend that ``cfg`` describes (a fresh one: a judge run closes its connections when it ends)."""
    judges.get_judge_backend(cfg.backend)
    return MAKERS[cfg.backend](cfg)
