"""Leaderboard harness on local task files (the real lm-eval task YAMLs with tiny local data) and a tiny
model: scores checked against a hand computation from the model's own log-likelihoods; reuse, CSV, errors.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")  # not on a bare GPU machine: skipped there, never a collection error

import benchmarks.leaderboard as L  # noqa: E402
from benchmarks.leaderboard import (LEADERBOARD_TASKS, LeaderboardConfig, LeaderboardError, TASKS_BY_NAME,
                                    evaluate_checkpoint, evaluate_checkpoints, result_path, run_checkpoints,
                                    scores_table)

from lb_tasks import TASK_DIR, _yaml, arc, gsm8k, hellaswag, mmlu, truthfulqa, winogrande, write_local_tasks  # noqa: F401,E402

ANSWER = " #### 7 8"  # what the scripted model generates after "Answer:"


# ------------------------------------------------------------------------------- hand computation

class HandLM:
    """Log-likelihoods straight from transformers, encoding as a causal LM harness must:
    encode context+continuation whole and split at the context's length (trailing spaces go to the
    continuation)."""

    def __init__(self, path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def loglik(self, context: str, continuation: str) -> float:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        cont = whole[len(ctx):]
        ids = self.torch.tensor([ctx + cont])
        with self.torch.no_grad():
            logp = self.model(ids).logits[0].double().log_softmax(-1)
        pos = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
        return float(sum(logp[p, t] for p, t in zip(pos, cont)))

    def generate(self, prompt: str, max_new_tokens: int = 16) -> str:
        ids = self.torch.tensor([self.tok.encode(prompt)])
        with self.torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def fewshot(shots, text, target, query, description=""):
    """lm-eval's default few-shot layout: description, 'text target' blocks joined by blank lines."""
    return description + "".join(f"{text(s)} {target(s)}\n\n" for s in shots) + query


def mc_scores(lm, ctx, choices, gold, contexts=None):
    """(acc, acc_norm) of one multiple-choice item; acc_norm divides by the choice's length in
    characters, as lm-eval does."""
    if contexts is not None:  # winogrande: one context per option, shared continuation
        lls = np.array([lm.loglik(c, choices) for c in contexts])
        return float(np.argmax(lls) == gold), None
    lls = np.array([lm.loglik(ctx, " " + c) for c in choices])
    lens = np.array([len(c) for c in choices], dtype=float)
    return float(np.argmax(lls) == gold), float(np.argmax(lls / lens) == gold)


def hand_scores(model_dir: Path, scripted_dir: Path) -> dict[str, float]:
    from lm_eval.tasks.hellaswag.utils import preprocess

    lm = HandLM(model_dir)
    out = {}
    # ARC: 25-shot acc_norm over the 5 test items.
    q = lambda d: f"Question: {d['question']}\nAnswer:"
    tgt = lambda d: d["choices"]["text"]["ABCD".index(d["answerKey"])]
    shots = [arc(i) for i in range(100, 125)]
    out["arc_challenge"] = np.mean([mc_scores(lm, fewshot(shots, q, tgt, q(d)), d["choices"]["text"],
                                              "ABCD".index(d["answerKey"]))[1] for d in map(arc, range(5))])
    # HellaSwag: 10-shot acc_norm, documents preprocessed as lm-eval's hellaswag does.
    def hs(d):
        return {"query": preprocess(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize()),
                "choices": [preprocess(e) for e in d["endings"]], "gold": int(d["label"])}
    shots = [hs(hellaswag(i)) for i in range(50, 60)]
    out["hellaswag"] = np.mean([
        mc_scores(lm, fewshot(shots, lambda s: s["query"], lambda s: s["choices"][s["gold"]], d["query"]),
                  d["choices"], d["gold"])[1] for d in (hs(hellaswag(i)) for i in range(4))])
    # TruthfulQA MC2: normalised probability mass on the true answers, 0-shot with lm-eval's QA preamble.
    preamble = _truthfulqa_preamble()
    mc2 = []
    for d in map(truthfulqa, range(4)):
        ctx = preamble + "\n\nQ: " + d["question"] + "\nA:"
        p = np.exp([lm.loglik(ctx, " " + c) for c in d["mc2_targets"]["choices"]])
        mc2.append(p[np.array(d["mc2_targets"]["labels"]) == 1].sum() / p.sum())
    out["truthfulqa_mc2"] = float(np.mean(mc2))
    # Winogrande: partial scoring, 5-shot; the option fills the blank in the context, the rest is scored.
    def wg(d):
        i = d["sentence"].index("_")
        return ([d["sentence"][:i] + o for o in (d["option1"], d["option2"])],
                d["sentence"][i + 1:].strip(), int(d["answer"]) - 1)
    shots = [wg(winogrande(i)) for i in range(10, 15)]
    prefix = "".join(f"{ctxs[g]} {rest}\n\n" for ctxs, rest, g in shots)
    accs = []
    for d in map(winogrande, range(4)):
        ctxs, rest, g = wg(d)
        accs.append(mc_scores(lm, None, " " + rest, g, contexts=[prefix + c for c in ctxs])[0])
    out["winogrande"] = float(np.mean(accs))
    # MMLU: per-subject acc, then the plain mean over subjects (the leaderboard's average).
    def mm(subj, d):
        return (f"{d['question'].strip()}\nA. {d['choices'][0]}\nB. {d['choices'][1]}\n"
                f"C. {d['choices'][2]}\nD. {d['choices'][3]}\nAnswer:")
    subj_acc = {}
    for subj, n in {"anatomy": 2, "astronomy": 5}.items():
        desc = f"The following are multiple choice questions (with answers) about {subj}.\n\n"
        shots = [mmlu(i) for i in range(20, 25)]
        subj_acc[subj] = np.mean([
            mc_scores(lm, fewshot(shots, lambda s: mm(subj, s), lambda s: "ABCD"[s["answer"]], mm(subj, d), desc),
                      list("ABCD"), d["answer"])[0] for d in map(mmlu, range(n))])
    out["mmlu"] = float(np.mean(list(subj_acc.values())))
    out["_mmlu_weighted"] = float((subj_acc["anatomy"] * 2 + subj_acc["astronomy"] * 5) / 7)
    # GSM8K (scripted model): greedy answer, strict "#### <number>" extraction, exact match.
    slm = HandLM(scripted_dir)
    em = []
    shots = [gsm8k(i, 3) for i in range(5)]
    for d in (gsm8k(1, 7), gsm8k(2, 8), gsm8k(3, 7)):
        prompt = fewshot(shots, lambda s: f"Question: {s['question']}\nAnswer:", lambda s: s["answer"],
                         f"Question: {d['question']}\nAnswer:")
        gen = slm.generate(prompt)
        m = re.search(r"#### (\-?[0-9\.\,]+)", gen)
        pred = m.group(1) if m else "[invalid]"
        em.append(float(pred == d["answer"].split("#### ")[-1]))
    out["gsm8k"] = float(np.mean(em))
    return out


def _truthfulqa_preamble() -> str:
    import yaml

    text = yaml.safe_load((TASK_DIR / "truthfulqa" / "truthfulqa_mc1.yaml").read_text())["doc_to_text"]
    return re.search(r"set prompt_qa = '(.*?)'\s*%\}", text, re.S).group(1)


def build_scripted_model(src: Path, out: Path) -> Path:
    """A bigram model from the tiny checkpoint whose greedy continuation of '...Answer:' is ANSWER then EOS:
    attention and MLP outputs are zeroed (the residual stream is the token embedding), and three
    embedding/unembedding rows are set so ':' -> ' #### 7' -> ' 8' -> EOS."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens([" #### 7", " 8"])
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    colon = tok.encode("Question: Tom has 1 apples.\nAnswer:")[-1]
    t1, t2 = tok.convert_tokens_to_ids([" #### 7", " 8"])
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        for k, (src_tok, dst_tok) in enumerate([(colon, t1), (t1, t2), (t2, tok.eos_token_id)]):
            e = torch.zeros(emb.shape[1])
            e[k] = 1.0
            emb[src_tok] = e
            head[dst_tok] = 0
            head[dst_tok, k] = 50.0
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory) -> Path:
    return write_local_tasks(tmp_path_factory.mktemp("lb"))


@pytest.fixture(scope="module")
def scripted_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return build_scripted_model(tiny_model_dir, tmp_path_factory.mktemp("scripted"))


def local_cfg(tasks_dir: Path, **kw) -> LeaderboardConfig:
    return LeaderboardConfig(include_path=(str(tasks_dir),), include_defaults=False, batch_size=4,
                             device="cpu", dtype="float32", offline=True, gen_max_new_tokens=16, **kw)


MC_TASKS = ("arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande")


@pytest.fixture(scope="module")
def evaluated(local_tasks, tiny_model_dir, scripted_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    scores = evaluate_checkpoints([("tiny", tiny_model_dir)], local_cfg(local_tasks, tasks=MC_TASKS), run)
    scores |= evaluate_checkpoints([("scripted", scripted_dir)], local_cfg(local_tasks, tasks=("gsm8k",)), run)
    return run, scores


def test_scores_match_hand_computation(evaluated, tiny_model_dir, scripted_dir):
    run, scores = evaluated
    hand = hand_scores(tiny_model_dir, scripted_dir)
    for task in MC_TASKS:
        assert scores["tiny"][task] == pytest.approx(hand[task], abs=1e-6), task
    assert scores["scripted"]["gsm8k"] == pytest.approx(hand["gsm8k"])
    assert hand["gsm8k"] == pytest.approx(2 / 3)  # strict match: '7' (not flexible's last number '8')


def test_result_files_record_settings_and_raw(evaluated):
    run, scores = evaluated
    rec = json.loads(result_path(run, "tiny", "arc_challenge").read_text())
    assert rec["num_fewshot"] == 25 and rec["raw"]["n-shot"]["arc_challenge"] == 25
    assert rec["metric"] == "acc_norm,none"
    assert rec["score"] == rec["raw"]["results"]["arc_challenge"]["acc_norm,none"]
    assert rec["lm_eval_version"] == __import__("lm_eval").__version__
    assert rec["task_versions"]["arc_challenge"] is not None and len(rec["task_hashes"]["arc_challenge"]) > 8
    assert rec["task_config_sha256"]["arc_challenge"]
    for task, spec in TASKS_BY_NAME.items():
        mid = "scripted" if task == "gsm8k" else "tiny"
        r = json.loads(result_path(run, mid, task).read_text())
        n_shot = r["raw"]["n-shot"]
        assert all(n_shot[t] == spec.num_fewshot for t in n_shot if t == task or t.startswith("mmlu_")), task
    mm = json.loads(result_path(run, "tiny", "mmlu").read_text())
    subj = [mm["raw"]["results"][t]["acc,none"] for t in ("mmlu_anatomy", "mmlu_astronomy")]
    assert mm["score"] == pytest.approx(np.mean(subj))
    # lm-eval's own group number is sample-weighted (2 and 5 items): ours is the plain mean.
    assert mm["raw"]["results"]["mmlu"]["acc,none"] == pytest.approx((subj[0] * 2 + subj[1] * 5) / 7)
    gsm = json.loads(result_path(run, "scripted", "gsm8k").read_text())
    assert gsm["metric"] == "exact_match,strict-match"
    # flexible-extract takes the last number (8): right only on the item whose answer is 8
    assert gsm["raw"]["results"]["gsm8k"]["exact_match,flexible-extract"] == pytest.approx(1 / 3)


def test_csv_layout(evaluated):
    import pandas as pd

    run, scores = evaluated
    df = pd.read_csv(run / "leaderboard" / "scores.csv", index_col="model_id")
    assert list(df.columns) == [t.name for t in LEADERBOARD_TASKS] + ["average"]
    assert sorted(df.index) == ["scripted", "tiny"]
    assert df.loc["tiny", "arc_challenge"] == pytest.approx(100 * scores["tiny"]["arc_challenge"], abs=1e-4)
    assert df.loc["scripted", "gsm8k"] == pytest.approx(100 * 2 / 3, abs=1e-4)
    assert math.isnan(df.loc["tiny", "gsm8k"]) and math.isnan(df.loc["tiny", "average"])  # incomplete row


def test_average_over_complete_rows(tmp_path):
    lb = tmp_path / "leaderboard" / "m"
    lb.mkdir(parents=True)
    vals = dict(zip(TASKS_BY_NAME, (0.5, 0.6, 0.4, 0.3, 0.7, 0.1)))
    for task, v in vals.items():
        (lb / f"{task}.json").write_text(json.dumps({"model_id": "m", "task": task, "score": v}))
    df = scores_table(tmp_path)
    assert df.loc["m", "average"] == pytest.approx(100 * sum(vals.values()) / 6)
    (lb / "gsm8k.json").write_text("{broken")
    with pytest.raises(LeaderboardError, match=r"gsm8k\.json: not valid JSON"):
        scores_table(tmp_path)


def test_rerun_reuses_and_settings_change_recomputes(local_tasks, tiny_model_dir, tmp_path, monkeypatch):
    import lm_eval

    calls = []
    real = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda *a, **k: calls.append(k["tasks"]) or real(*a, **k))
    cfg = local_cfg(local_tasks, tasks=("truthfulqa_mc2", "winogrande"), limit=2)
    first = evaluate_checkpoint(tiny_model_dir, cfg, tmp_path, model_id="tiny")
    assert len(calls) == 2
    again = evaluate_checkpoint(tiny_model_dir, cfg, tmp_path, model_id="tiny")
    assert len(calls) == 2 and again == first  # nothing recomputed
    cfg3 = local_cfg(local_tasks, tasks=("truthfulqa_mc2", "winogrande"), limit=2,
                     num_fewshot={"winogrande": 1})
    evaluate_checkpoint(tiny_model_dir, cfg3, tmp_path, model_id="tiny")
    assert len(calls) == 3  # only winogrande: its shot count changed
    rec = json.loads(result_path(tmp_path, "tiny", "winogrande").read_text())
    assert rec["num_fewshot"] == 1 and rec["raw"]["n-shot"]["winogrande"] == 1


def test_checkpoint_content_change_recomputes(local_tasks, tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    import lm_eval

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, ckpt)
    calls = []
    real = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = local_cfg(local_tasks, tasks=("truthfulqa_mc2",), limit=1)
    evaluate_checkpoint(ckpt, cfg, tmp_path / "run", model_id="m")
    gen = ckpt / "generation_config.json"
    gen.write_text(gen.read_text().replace("{", '{"_touched": true,', 1))  # content changed
    evaluate_checkpoint(ckpt, cfg, tmp_path / "run", model_id="m")
    assert len(calls) == 2
    os.utime(gen)  # same content, new mtime: re-hashed, same hash, reused
    evaluate_checkpoint(ckpt, cfg, tmp_path / "run", model_id="m")
    assert len(calls) == 2


def test_unknown_task_errors(local_tasks, tiny_model_dir, tmp_path):
    with pytest.raises(LeaderboardError, match="unknown leaderboard task 'arc_easy'"):
        evaluate_checkpoint(tiny_model_dir, local_cfg(local_tasks, tasks=("arc_easy",)), tmp_path, model_id="m")
    empty = tmp_path / "empty_tasks"
    empty.mkdir()
    with pytest.raises(LeaderboardError, match="'gsm8k' is not in lm-eval's task registry.*--include-path"):
        evaluate_checkpoint(tiny_model_dir, local_cfg(empty, tasks=("gsm8k",)), tmp_path, model_id="m")


def test_non_model_path_errors(local_tasks, tmp_path):
    (tmp_path / "notamodel").mkdir()
    for bad, msg in ((tmp_path / "missing", "not a directory"),
                     (tmp_path / "notamodel", "not a Hugging Face model checkpoint")):
        with pytest.raises(LeaderboardError, match=msg):
            evaluate_checkpoint(bad, local_cfg(local_tasks, tasks=("gsm8k",)), tmp_path, model_id="m")


def test_unreachable_dataset_offline(tiny_model_dir, tmp_path, monkeypatch):
    import time

    d = tmp_path / "tasks"
    d.mkdir()
    _yaml(d / "winogrande.yaml", {"include": str(TASK_DIR / "winogrande" / "default.yaml"),
                                  "task": "winogrande", "dataset_path": "srdpo-test/not-cached-anywhere"})
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty_cache"))
    t0 = time.time()
    cfg = local_cfg(d, tasks=("winogrande",))
    with pytest.raises(LeaderboardError, match=r"srdpo-test/not-cached-anywhere.*offline: run once online") as e:
        evaluate_checkpoint(tiny_model_dir, cfg, tmp_path, model_id="m")
    assert time.time() - t0 < 60 and e.value.first and e.value.until == L.availability(cfg, True)
    # said in the run directory, and the report quotes it
    from analysis.inputs import load_inputs

    reason = json.loads((tmp_path / "leaderboard" / "unavailable.json").read_text())["reason"]
    assert "not-cached-anywhere" in reason
    assert any("the leaderboard was skipped (task winogrande" in n for n in load_inputs(tmp_path).notes)
    # asked again in the same process with nothing changed: the same answer at once, without loading a task
    def loaded_again(cfg):
        raise RuntimeError("tasks loaded again")

    monkeypatch.setattr(L, "make_task_manager", loaded_again)
    with pytest.raises(L.DatasetsUnavailable, match="not-cached-anywhere") as again:
        evaluate_checkpoint(tiny_model_dir, cfg, tmp_path, model_id="m2")
    assert not again.value.first and again.value.until == e.value.until
    # something arrives in the datasets' cache: tried again
    (tmp_path / "empty_cache" / "srdpo-test___not-cached-anywhere").mkdir(parents=True)
    assert L.availability(cfg, True) != e.value.until
    with pytest.raises(RuntimeError, match="tasks loaded again"):
        evaluate_checkpoint(tiny_model_dir, cfg, tmp_path, model_id="m2")


def test_run_checkpoints_lists_steps_in_order(tmp_path):
    run = tmp_path / "train" / "sr-dpo"
    for name in ("checkpoint-20", "checkpoint-100", "checkpoint-3", "final", "logs"):
        (run / name).mkdir(parents=True)
        if name.startswith("checkpoint-"):  # the trainer's record: 4 pairs a step
            (run / name / "srdpo_info.json").write_text(json.dumps({"pairs_seen": 4 * int(name.split("-")[1])}))
    # the ids every stage uses for these checkpoints (contracts.ids): run + pairs seen
    assert [m for m, _ in run_checkpoints(run)] == ["sr-dpo-p12", "sr-dpo-p80", "sr-dpo-p400", "sr-dpo"]
    with pytest.raises(LeaderboardError, match="no checkpoint"):
        run_checkpoints(run / "logs")


def test_cli_runs_prints_table_and_reports_errors(local_tasks, tiny_model_dir, tmp_path, capsys):
    from srdpo_eval.cli import main

    common = ["--output", str(tmp_path), "--include-path", str(local_tasks), "--include-defaults", "false",
              "--offline", "true",
              "--device", "cpu", "--dtype", "float32", "--batch-size", "2", "--limit", "2"]
    assert main(["leaderboard", str(tiny_model_dir), "--model-id", "tiny", "--tasks", "truthfulqa_mc2", *common]) == 0
    out = capsys.readouterr().out
    rec = json.loads(result_path(tmp_path, "tiny", "truthfulqa_mc2").read_text())
    assert re.search(rf"tiny\s+-\s+-\s+{100 * rec['score']:.2f}\s+-", out), out
    assert rec["settings"]["limit"] == 2
    assert main(["leaderboard", str(tmp_path / "nope"), "--tasks", "gsm8k", *common]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_offline_probe_is_quick_and_sets_flags(monkeypatch):
    import time

    from benchmarks.leaderboard import decide_offline, hub_mode, hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    t0 = time.time()
    assert not hub_reachable() and decide_offline(LeaderboardConfig())
    assert time.time() - t0 < 10
    assert decide_offline(LeaderboardConfig(offline=False)) is False
    import datasets.config

    before = (os.environ.get("HF_HUB_OFFLINE"), datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_CACHE)
    with hub_mode(True, datasets_cache="/tmp/srdpo-lb-cache"):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and datasets.config.HF_HUB_OFFLINE is True
        assert str(datasets.config.HF_DATASETS_CACHE) == "/tmp/srdpo-lb-cache"
    assert (os.environ.get("HF_HUB_OFFLINE"), datasets.config.HF_HUB_OFFLINE,
            datasets.config.HF_DATASETS_CACHE) == before  # restored, whatever it was


def test_backend_errors(local_tasks, tiny_model_dir, tmp_path):
    import importlib.util

    from benchmarks.leaderboard import make_lm

    with pytest.raises(LeaderboardError, match="unknown backend 'tgi'"):
        evaluate_checkpoint(tiny_model_dir, local_cfg(local_tasks, tasks=("gsm8k",), backend="tgi"), tmp_path,
                            model_id="m")
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(LeaderboardError, match="vllm is not installed.*--backend hf"):
        make_lm(tiny_model_dir, local_cfg(local_tasks, backend="vllm"))
