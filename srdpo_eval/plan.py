"""What `reproduce --dry-run` says: every unit and what it would do, the training it would run, and the
judge calls it would make with their cost. It runs nothing, writes nothing and reaches no network."""

from __future__ import annotations

import shlex

from contracts.benches import get_bench
from contracts.judges import get_judge_backend
from srdpo_eval import context as C
from srdpo_eval.context import Context
from srdpo_eval.manifest import Manifest, Unit, plan
from srdpo_eval.units import expected_steps


def print_plan(ctx: Context, manifest: Manifest, units1: list[Unit], units2: list[Unit], *,
               only: set[str] | None = None) -> None:
    """The plan of every unit (``only``: of a shard's share, see srdpo_eval.shards)."""
    rows = [(u, a) for u, a in plan(units1 + units2, manifest, probe=False) if only is None or u.name in only]
    width = max((len(u.name) for u, _ in rows), default=0)
    print(f"plan for {ctx.rd.root} (config {ctx.cfg.name!r}):")
    if only is not None:
        print(f"  this shard: {len(rows)} of the {len(units2)} evaluation units (training must have finished; "
              f"judging, models.json, leaderboard/scores.csv and figures are left to a plain run)")
    launches = C.launch_commands(ctx)
    for u, action in rows:
        print(f"  {action:6s} {u.name:{width}s}  {u.describe}")
        if u.name in launches and action != "skip":
            print(f"  {'':6s} {'':{width}s}  $ {shlex.join(launches[u.name])}")
    runs = [(u, a) for u, a in plan(units1, manifest, probe=False) if u.name.startswith("train/")]
    todo = sum(a != "skip" for _, a in runs)
    seeds = ctx.cfg.seeds
    print(f"seeds: {', '.join(map(str, seeds))} (every objective trained once per seed)" if len(seeds) > 1 else
          f"seed: {seeds[0]} (one training run per objective: no run-to-run variation is measured)")
    print(f"training: {todo} runs x {expected_steps(ctx)} steps of {ctx.cfg.train.batch_size} pairs"
          + (f" ({len(runs) - todo} already finished)" if todo < len(runs) else "") if todo else
          f"training: all {len(runs)} runs finished")
    print(judge_estimate(ctx, units1 + units2, manifest))


def judge_estimate(ctx: Context, units: list[Unit], manifest: Manifest) -> str:
    """Judge calls still to make: exact where the answers exist and stay (the judge's own dry run:
    judgments already written, cache hits, tokens, cost), else counted from the questions with a rough
    cost: a judge unit whose settings or answers change starts from nothing, whatever files are there."""
    from benchmarks.judge.estimate import price_for

    calls = cached = counted = 0
    notes = []
    judge = get_judge_backend(ctx.judge_kind)
    actions = {u.name: a for u, a in plan(units, manifest, probe=False)}
    for u in (u for u in units if u.stage == "judge" and actions[u.name] != "skip"):
        bench = u.key["bench"]
        models = u.key.get("pair") or u.key["models"]
        mode = "pairwise" if u.key.get("pair") else "single"
        stays = actions[u.name] != "rerun" and all(actions.get(d) == "skip" for d in u.deps)
        if stays and all(ctx.rd.answers(bench, m).is_file() for m in models):
            summary = _judge_dry_run(ctx, bench, mode, dict(pairs=[tuple(models)]) if mode == "pairwise"
                                     else dict(models=models))
            calls += summary.calls_needed
            cached += summary.calls_cached
            est = summary.estimate
            if est is not None and not judge.served:  # a local judge reads each prompt once and generates nothing
                notes.append(f"{u.name}: {est.calls} calls, ~{est.prompt_tokens:,} prompt tokens to score")
            elif est is not None:
                notes.append(f"{u.name}: {est.calls} calls, ~{est.prompt_tokens:,} prompt + {est.completion_tokens:,} "
                             f"completion tokens" + (f", about ${est.cost_usd:,.2f}" if est.cost_usd is not None else ""))
            continue
        try:
            n_q = len(C.questions(ctx, bench))
        except Exception as e:  # noqa: BLE001 — the plan still prints; the run itself fails loudly
            notes.append(f"{bench}: data not available ({e})")
            continue
        # a local judge grades each question and turn once more, against the content-free answer
        n = n_q * get_bench(bench).turns * (2 if mode == "pairwise" else len(models) + judge.calibrated)
        calls += n
        counted += n
    endpoint = _endpoint(ctx) if judge.served else None
    where = f" at {endpoint}" if endpoint else ""
    line = f"judge ({ctx.judge_kind}: {ctx.judge_model}{where}): {calls} calls to make, {cached} of them cached"
    price = price_for(C.judge_config(ctx).model, endpoint) if judge.served else None
    if counted and price:
        # answers not generated yet: assume FastChat-sized prompts (~1,200 tokens in, ~300 out)
        usd = counted * (1200 * price[0] + 300 * price[1]) / 1e6
        line += f"; about ${usd:,.2f} for the {counted} calls whose answers do not exist yet"
    return "\n".join([line, *("  " + n for n in notes)])


def _endpoint(ctx: Context) -> str | None:
    """A served judge's endpoint when it is not OpenAI's own (a local server is named, and never priced)."""
    import os

    return C.judge_config(ctx).base_url or os.environ.get("OPENAI_BASE_URL") or None


def _judge_dry_run(ctx: Context, bench: str, mode: str, kw: dict):
    from benchmarks.judge.config import plan_args
    from benchmarks.judge.run import judge_plan

    return judge_plan(ctx.rd.root, bench, mode=mode, data_dir=C.bench_data_dir(ctx, bench),
                      **plan_args(C.judge_config(ctx)), **C.selection(ctx), **kw)
