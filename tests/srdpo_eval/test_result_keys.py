"""Each stage alone says what decides its result (its ``result_key`` and ``EXECUTION_ONLY``), and
`reproduce` keys its units only by those: walking every setting of every section of a reproduce config,
an execution-only one changes no unit's key (the plan reruns nothing), every other one changes some."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

import analysis.config
import benchmarks.answers
import benchmarks.delta
import benchmarks.judge.config
import benchmarks.leaderboard
import srdpo_eval.config as RC
import trainer.config

# section -> the stage that owns its settings (its config class and execution-only settings)
STAGES = {
    "train": trainer.config, "sft": trainer.config, "bench": benchmarks.answers,
    "judge": benchmarks.judge.config, "leaderboard": benchmarks.leaderboard, "delta": benchmarks.delta,
    "analysis": analysis.config,
}
# settings not read at all by the walked configuration (a local judge); and see _not_read
# an OpenAI-compatible judge's settings: the walk runs the local judge (test_openai_judge_key checks them)
NOT_READ = {"judge.model": "", "judge.judge_name": "", "judge.max_tokens": ""}


def _not_read(cfg) -> set[str]:
    """The loss settings that no objective of a section reads (contracts.objectives says which each reads):
    changing them changes no result."""
    from contracts import objectives
    from trainer.config import LOSS_SETTINGS

    out = set(NOT_READ)
    for section, names in (("train", cfg.train.objectives), ("sft", ["sft"])):
        read = {k for n in names for k in objectives.get(n).settings}
        out |= {f"{section}.{k}" for k in LOSS_SETTINGS if k not in read}
        if not any(objectives.get(n).ratings for n in names):
            out.add(f"{section}.rating_fields")
    return out
# another valid value where the generic rule has none
OTHER = {
    "seeds": [0, 1], "model": "@other_model", "ref_model": "@other_model", "judge.local_model": "@other_model",
    "data": "@other_data",
    "sft.data": "@other_data", "delta.pairs": "@other_data", "data_split": "test", "name": "renamed",
    "train.objectives": ["dpo"], "train.lam_sweep": [0.3], "train.launcher": "torchrun --nproc_per_node 2",
    "train.device": "cpu", "sft.device": "cpu", "bench.device": "cpu", "leaderboard.device": "cpu",
    "delta.device": "cpu", "train.dtype": "bf16", "sft.dtype": "bf16", "bench.dtype": "bf16",
    "leaderboard.dtype": "bf16", "delta.dtype": "bf16", "train.mixed_precision": "bf16",
    "sft.mixed_precision": "bf16", "bench.benches": ["mt_bench", "vicuna_bench"], "bench.conv_template": "vicuna_v1.1",
    "bench.backend": "vllm", "leaderboard.backend": "vllm", "leaderboard.tasks": ["arc_challenge"],
    "leaderboard.batch_size": 4, "leaderboard.num_fewshot": {"winogrande": 1}, "leaderboard.include_path": ["@dir"],
    "leaderboard.hf_datasets_cache": "@dir", "leaderboard.offline": True, "judge.backend": "openai",
    "judge.base_url": "http://127.0.0.1:9/v1", "judge.concurrency": 4, "judge.judge_name": "another-name", "judge.api_key_env": "OTHER_KEY", "judge.tie_band": 0.1,
    "judge.pairs": [["dpo", "sr-dpo"]], "sft.batch_size": 3, "sft.group_by_length": False, "judge.baseline": "dpo", "delta.rating_fields": ["a", "b"],
    "delta.reduce": "mean", "train.reduce": "mean", "sft.reduce": "mean", "train.quality_prompt": "Be useful.",
    "sft.quality_prompt": "Be useful.", "train.chat_template": True, "sft.chat_template": True,
    "train.ref_cache_dir": "@dir", "sft.ref_cache_dir": "@dir", "sft.max_length": 600, "sft.max_prompt_length": 128,
    "train.rating_fields": ["a", "b"], "sft.rating_fields": ["a", "b"], "judge.model": "gpt-4o",
    "train.max_prompt_length": 128, "sft.max_steps": 3, "sft.save_every": 1, "bench.data_dir": "@dir",
}


def _other(name: str, value, f, tp, fixtures: dict):
    if name in OTHER:
        v = OTHER[name]
        sub = lambda x: fixtures.get(x, x) if isinstance(x, str) else x  # noqa: E731
        return [sub(x) for x in v] if isinstance(v, list) else sub(v)
    choices = f.metadata.get("choices")
    base = typing.get_args(tp)[0] if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) else tp
    if value is None:
        return {int: 2, float: 0.25, bool: True, str: "x"}[base]
    if isinstance(value, bool):
        return not value
    if choices and not isinstance(value, (list, tuple)):
        return next(c for c in choices if c != value)
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if f.metadata.get("le") is not None else value * 2 + 0.01
    raise AssertionError(f"{name}: no other value known for {value!r}; add one to OTHER")


def _settings(cfg) -> list[tuple[str, str, object, object]]:
    """(dotted name, section, field, type) of every setting of a reproduce config."""
    out = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if dataclasses.is_dataclass(hints[f.name]):
            sub = getattr(cfg, f.name)
            sh = typing.get_type_hints(type(sub))
            out += [(f"{f.name}.{g.name}", f.name, g, sh[g.name]) for g in dataclasses.fields(sub)]
        else:
            out.append((f.name, "", f, hints[f.name]))
    return out


@pytest.fixture(scope="module")
def walk(tiny_model_dir, fastchat_data_dir, tmp_path_factory):
    from contracts.run_dir import RunDir
    from srdpo_eval.context import resolve_inputs
    from srdpo_eval.manifest import unit_hashes
    from srdpo_eval.units import all_units
    from tiny import build_tiny_model

    d = tmp_path_factory.mktemp("keys")
    for name in ("pairs", "other"):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(
            {"prompt": f"{name} {i}?", "chosen": " yes", "rejected": " no", "chosen_rating": 5, "rejected_rating": 1})
            + "\n" for i in range(8)))
    (d / "dir").mkdir()
    fixtures = {"@other_model": str(build_tiny_model(d / "other-model", seed=3)), "@other_data": str(d / "other.jsonl"),
                "@dir": str(d / "dir")}
    base = {"name": "keys", "model": str(tiny_model_dir), "data": str(d / "pairs.jsonl"),
            "sft": {"enabled": True},
            "train": {"objectives": ["dpo", "sr-dpo"], "max_steps": 4, "save_every": 2, "batch_size": 2},
            "bench": {"benches": ["mt_bench"], "data_dir": str(fastchat_data_dir), "per_category": 1},
            "judge": {"backend": "local"}, "delta": {"pairs": str(d / "pairs.jsonl")}}

    def hashes(cfg) -> dict[str, str]:
        ctx = resolve_inputs(cfg, RunDir(d / "run"), dry_run=True)
        return unit_hashes([u for phase in all_units(ctx, planned=True) for u in phase])

    from contracts.settings import NamedSource, apply

    return apply(RC.ReproduceConfig(), base, NamedSource("walk")), hashes, fixtures


def test_every_setting_is_execution_only_or_keys_a_unit(walk):
    cfg, hashes, fixtures = walk
    before = hashes(cfg)
    wrong = []
    not_read = _not_read(cfg)
    for name, section, f, tp in _settings(cfg):
        holder = getattr(cfg, section) if section else cfg
        changed = dataclasses.replace(holder, **{f.name: _other(name, getattr(holder, f.name), f, tp, fixtures)})
        now = hashes(dataclasses.replace(cfg, **{section: changed}) if section else changed)
        execution_only = (f.name in STAGES[section].EXECUTION_ONLY if section in STAGES and
                          f.name in {g.name for g in dataclasses.fields(_stage_class(section))} else False
                          ) or name in RC.EXECUTION_ONLY or name in not_read
        if execution_only and now != before:
            wrong.append(f"{name} is execution-only (or not read) but changes "
                         f"{sorted(k for k in now if now[k] != before.get(k))}")
        if not execution_only and now == before:
            wrong.append(f"{name} decides results but changes no unit's key")
    assert not wrong, "\n".join(wrong)


def _stage_class(section: str):
    return {"train": trainer.config.TrainConfig, "sft": trainer.config.TrainConfig,
            "bench": benchmarks.answers.GenerationConfig, "judge": benchmarks.judge.config.JudgeConfig,
            "leaderboard": benchmarks.leaderboard.LeaderboardConfig, "delta": benchmarks.delta.DeltaConfig,
            "analysis": analysis.config.AnalysisConfig}[section]


def test_the_walk_would_see_a_key_that_ignores_its_stage(walk, monkeypatch):
    """The walk is not vacuous: a unit keyed by a whole config (the old way) fails it."""
    cfg, hashes, _ = walk
    before = hashes(cfg)
    assert hashes(dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, batch_size=3))) == before
    monkeypatch.setattr(benchmarks.answers, "result_key", lambda c: dataclasses.asdict(c))
    assert hashes(dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, batch_size=3))) != before


def test_openai_judge_key():
    """The served judge's model, name and reply length decide its judgments; how it is reached does not."""
    from benchmarks.judge.config import EXECUTION_ONLY, JudgeConfig, result_key

    base = JudgeConfig(backend="openai", model="gpt-4")
    key = result_key(base)
    for change in ({"model": "gpt-4o"}, {"judge_name": "mine"}, {"max_tokens": 512}):
        assert result_key(dataclasses.replace(base, **change)) != key, change
    for name in EXECUTION_ONLY:
        other = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "K", "concurrency": 3, "stream": False,
                 "timeout": 5.0, "queue_timeout": 5.0, "max_retries": 1, "connect_failures": 1}[name]
        assert result_key(dataclasses.replace(base, **{name: other})) == key, name
