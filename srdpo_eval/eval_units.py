"""The evaluation units of a `reproduce` run: answers, judgments, leaderboard tasks and Δπ of each model.

Each unit calls its stage's own function and is keyed by its stage's ``result_key`` (what decides the
stage's result) and by what it reads: the bench and its questions, the model (the unit that trained it is
a dependency), the rated pairs. Units that load a model run in worker processes with ``--workers``.
"""

from __future__ import annotations

from contracts.benches import get_bench
from contracts.run_dir import ModelEntry
from srdpo_eval import context as C
from srdpo_eval.context import Context
from srdpo_eval.manifest import Unit, remove_path


def answers_unit(ctx: Context, bench: str, m: ModelEntry, deps: list[str]) -> Unit:
    from benchmarks.answers import result_key

    gcfg = C.generation_config(ctx, m)

    def run():
        from benchmarks.answers import generate_answers

        qs = C.questions(ctx, bench)
        path = generate_answers(m.path, qs, ctx.rd.answers(bench, m.model_id), model_id=m.model_id, cfg=gcfg,
                                hash_cache=ctx.rd.hash_cache)
        return {"answers": str(path), "questions": len(qs)}

    b = ctx.cfg.bench
    what = ("the first question of each category" if b.per_category == 1 else
            f"the first {b.per_category} questions of each category" if b.per_category else "all questions")
    return Unit(f"answers/{bench}/{m.model_id}", "answers",
                {"bench": bench, **C.selection(ctx), "generation": result_key(gcfg), **C.model_identity(ctx, m)},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.answers(bench, m.model_id)),
                describe=what + (f", at most {b.limit}" if b.limit else ""), worker=True)


def judge_units(ctx: Context, bench: str, models: list[ModelEntry], pairs: list[tuple[str, str]]) -> list[Unit]:
    """Single grading of every model (MT-Bench) and each pair both ways. Judge units appending to one
    judgment file run one at a time (``shared_file``)."""
    from benchmarks.judge.config import result_key
    from benchmarks.judge.run import drop_judgments

    key = {"bench": bench, **C.selection(ctx), "judge": result_key(C.judge_config(ctx))}
    answers = lambda ids: [f"answers/{bench}/{i}" for i in ids]  # noqa: E731
    units = []
    if ctx.cfg.judge.single and get_bench(bench).single:
        ids = [m.model_id for m in models]
        single = ctx.rd.judgments(bench, ctx.judge_model, "single")
        units.append(Unit(f"judge/{bench}/single", "judge", {**key, "models": ids},
                          lambda: _judge(ctx, bench, "single", models=ids), deps=answers(ids),
                          clear=lambda: drop_judgments(single, set(ids)),
                          describe=f"single grading of {len(ids)} models", worker=True, shared_file=str(single)))
    pair_file = ctx.rd.judgments(bench, ctx.judge_model, "pairwise")
    for a, b in pairs:
        units.append(Unit(f"judge/{bench}/pair/{a}__{b}", "judge", {**key, "pair": [a, b]},
                          lambda a=a, b=b: _judge(ctx, bench, "pairwise", pairs=[(a, b)]), deps=answers([a, b]),
                          clear=lambda a=a, b=b: drop_judgments(pair_file, {a, b}),
                          describe=f"{a} vs {b}, both orders", worker=True, shared_file=str(pair_file)))
    return units


def _judge(ctx: Context, bench: str, mode: str, *, models=None, pairs=None) -> dict:
    from benchmarks.judge import run as judge_run
    from benchmarks.judge.config import make_backend

    jcfg = C.judge_config(ctx)
    kw = dict(data_dir=C.bench_data_dir(ctx, bench), concurrency=jcfg.concurrency, cache=True, **C.selection(ctx))
    if mode == "single":
        s = judge_run.judge_single(ctx.rd.root, bench, make_backend(jcfg), models=models, **kw)
    else:
        s = judge_run.judge_pairwise(ctx.rd.root, bench, make_backend(jcfg), pairs=pairs, **kw)
    return {"matches": s.total, "already_done": s.already_done}


def leaderboard_units(ctx: Context, models: list[ModelEntry], deps_of) -> list[Unit]:
    """Each model's leaderboard tasks (results reused per (checkpoint, task) inside), then scores.csv.
    Offline without the tasks' datasets, they are skipped until the Hugging Face caches change."""
    import functools

    from benchmarks.leaderboard import availability

    # one Hub probe per run; none in a dry run, which takes the machine as offline
    recheck = functools.cache(lambda probe: availability(C.leaderboard_config(ctx), None if probe else True))
    units = [_leaderboard_unit(ctx, m, deps_of(m.model_id), recheck) for m in models]

    def scores():
        from benchmarks.leaderboard import collect_results, write_scores_csv

        if not collect_results(ctx.rd.root):
            return {"scores_csv": None}
        return {"scores_csv": str(write_scores_csv(ctx.rd.root))}

    def inputs() -> str:
        from contracts.hashing import stat_digest

        return stat_digest(ctx.rd.leaderboard.glob("*/*.json"), ctx.rd.root)

    return units + [Unit("leaderboard", "leaderboard", {"models": [m.model_id for m in models]}, scores,
                         deps=[u.name for u in units], inputs=inputs, describe="leaderboard/scores.csv")]


def _leaderboard_unit(ctx: Context, m: ModelEntry, deps: list[str], recheck) -> Unit:
    """lm-eval's task index is built once per process; datasets found missing are said once per process."""
    from benchmarks.leaderboard import result_key

    lcfg = C.leaderboard_config(ctx)

    def run():
        from benchmarks.leaderboard import DatasetsUnavailable, LeaderboardError, evaluate_checkpoints

        try:  # scores.csv is written once, by the "leaderboard" unit, not by units running side by side
            scores = evaluate_checkpoints([(m.model_id, m.path)], lcfg, ctx.rd.root, scores_csv=False)
        except DatasetsUnavailable as e:
            if e.first:
                print(f"leaderboard skipped: {e}", flush=True)
            return {"skipped": str(e), "until": e.until}
        except LeaderboardError as e:
            print(f"leaderboard skipped: {e}", flush=True)
            return {"skipped": str(e)}
        return {"scores": scores[m.model_id]}

    lb = ctx.cfg.leaderboard
    return Unit(f"leaderboard/{m.model_id}", "leaderboard", {"leaderboard": result_key(lcfg), **C.model_identity(ctx, m)},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.leaderboard_model(m.model_id)), recheck=recheck,
                describe=f"{len(lb.tasks)} tasks" + (f", limit {lb.limit}" if lb.limit else ""), worker=True)


def delta_unit(ctx: Context, m: ModelEntry, deps: list[str]) -> Unit:
    from benchmarks.delta import result_key

    dcfg = C.delta_config(ctx)

    def run():
        from benchmarks.delta import compute_delta

        out = ctx.rd.delta_table(m.model_id)
        # the reference's terms on these pairs are the same for every model: cached once in refcache/
        compute_delta(m.path, ctx.delta_pairs, out, cfg=dcfg, ref_model=ctx.ref_model, ref_cache_dir=ctx.rd.refcache,
                      model_id=m.model_id)
        return {"table": str(out)}

    key = {"pairs": ctx.identity["delta_pairs"], "ref_model": ctx.identity["ref_model"], "delta": result_key(dcfg),
           **C.model_identity(ctx, m)}
    return Unit(f"delta/{m.model_id}", "delta", key, run, deps=deps,
                clear=lambda: remove_path(ctx.rd.delta_table(m.model_id)),
                describe="Δπ and m(x) on the rated pairs (Table 4)", worker=True)
