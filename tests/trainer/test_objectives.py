"""The objectives beyond the paper's four, each equal to its reference implementation on the same per-pair
log-probs in fp64 (TRL 1.16 where TRL has the loss), each trainable, each Sr- variant equal to its base at
step 0; and the registry's promise: one entry and one loss add an objective."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import trainer.train as train_mod
from contracts import objectives
from trainer import losses as L
from trainer.config import TrainConfig

B = 6


def _terms(seed: int = 0, reduce: str = "sum", n_range=(3, 40)):
    """Per-pair terms of B pairs in fp64: sums, token counts, the reference reduced as ``reduce``, ratings."""
    g = torch.Generator().manual_seed(seed)
    n_c = torch.randint(*n_range, (B,), generator=g)
    n_r = torch.randint(*n_range, (B,), generator=g)
    per_tok = lambda n: -(torch.rand(B, generator=g, dtype=torch.float64) * 2 + 0.2) * n  # noqa: E731
    pc, pr, rc, rr = per_tok(n_c), per_tok(n_r), per_tok(n_c), per_tok(n_r)
    red = (lambda x, n: x) if reduce == "sum" else (lambda x, n: x / n)
    gap = torch.randint(0, 5, (B,), generator=g).double()
    return L.PairTerms(pc, pr, n_c, n_r, reduce, red(rc, n_c), red(rr, n_r), rating_gap=gap,
                       token_scale=B / float(n_c.sum())), (pc, pr, rc, rr)


# ------------------------------------------------------------------------------------------ TRL


class _StubPolicy(torch.nn.Module):
    """Returns, for TRL's DPOTrainer, per-token log-probs that sum to the given per-sequence values."""

    def __init__(self, logps: torch.Tensor, T: int):
        super().__init__()
        self.logps, self.T = logps, T

    def forward(self, **kw):
        lp = torch.zeros(len(self.logps), self.T, dtype=torch.float64)
        lp[:, -1] = self.logps  # TRL sums the shifted per-token log-probs over the sequence
        zeros = torch.zeros_like(lp)
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


@pytest.fixture(scope="module")
def trl_dpo(tiny_model_dir, tmp_path_factory):
    """A TRL DPOTrainer whose loss code runs on given per-pair log-probs (the model is a stub)."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from trainer.modeling import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir, dtype="fp32", device="cpu")
    records = [{"prompt": "sea?", "chosen": " yes", "rejected": " no"}] * 2

    def loss(loss_type: str, t: L.PairTerms, pc, pr, rc, rr, ls: float = 0.0) -> float:
        args = DPOConfig(output_dir=str(tmp_path_factory.mktemp(loss_type)), beta=0.1, loss_type=[loss_type],
                         label_smoothing=ls, report_to=[], max_length=None, use_cpu=True, bf16=False,
                         gradient_checkpointing=False, precompute_ref_log_probs=False)
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(records),
                             processing_class=tok)
        trainer.precompute_ref_logps = True  # the reference's per-pair log-probs are given, as ours
        T = int(max(t.n_chosen.max(), t.n_rejected.max())) + 2
        mask = torch.zeros(2 * B, T, dtype=torch.long)
        for i, n in enumerate(torch.cat([t.n_chosen, t.n_rejected]).tolist()):
            mask[i, T - n:] = 1
        inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T),
                  "completion_mask": mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
        return trainer._compute_loss(_StubPolicy(torch.cat([pc, pr]), T), inputs, False).item()

    return loss


@pytest.mark.parametrize("objective,loss_type", [("dpo", "sigmoid"), ("hinge", "hinge"), ("rdpo", "robust")])
def test_margin_losses_equal_trl_dpo_trainer(trl_dpo, objective, loss_type):
    t, raw = _terms(1)
    s = L.Settings(beta=0.1, label_smoothing=0.2)
    ours = L.LOSSES[objective](t, s).mean().item()
    theirs = trl_dpo(loss_type, t, *raw, ls=0.2 if loss_type == "robust" else 0.0)
    assert abs(ours - theirs) < 1e-6 and abs(ours) > 1e-3, (ours, theirs)


def test_ipo_with_per_token_means_equals_trl(trl_dpo):
    """TRL's IPO divides each log-ratio by its completion's tokens: our ``reduce: mean``."""
    t, raw = _terms(2, reduce="mean")
    ours = L.LOSSES["ipo"](t, L.Settings(beta=0.1)).mean().item()
    assert abs(ours - trl_dpo("ipo", t, *raw)) < 1e-6


def test_cdpo_equals_its_equation_and_trl_sigmoid_and_robust(trl_dpo):
    """TRL 1.16's sigmoid loss no longer takes label smoothing; cDPO's mean loss is the identity
    2(1−ε)·sigmoid − (1−2ε)·robust of TRL's two, and its equation computed here in NumPy."""
    t, raw = _terms(3)
    eps = 0.2
    ours = L.LOSSES["cdpo"](t, L.Settings(beta=0.1, label_smoothing=eps))
    z = 0.1 * ((raw[0] - raw[2]) - (raw[1] - raw[3])).numpy()
    by_hand = (1 - eps) * np.logaddexp(0, -z) + eps * np.logaddexp(0, z)
    np.testing.assert_allclose(ours.numpy(), by_hand, rtol=1e-12)
    via_trl = 2 * (1 - eps) * trl_dpo("sigmoid", t, *raw) - (1 - 2 * eps) * trl_dpo("robust", t, *raw, ls=eps)
    assert abs(ours.mean().item() - via_trl) < 1e-6
    assert torch.allclose(L.LOSSES["cdpo"](t, L.Settings(beta=0.1, label_smoothing=0.0)), L.LOSSES["dpo"](t, L.Settings()))


def test_simpo_equals_trl_cpo_trainer():
    pytest.importorskip("trl")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    t, _ = _terms(4)
    s = L.Settings(beta=2.0, simpo_gamma=0.8)
    a, b = t.mean_logps()
    fake = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.8, beta=2.0, label_smoothing=0.0,
                           accelerator=SimpleNamespace(device="cpu"))
    theirs, _, _ = CPOTrainer.cpo_loss(fake, a, b)  # CPO's SimPO takes per-token mean log-probs
    torch.testing.assert_close(L.LOSSES["simpo"](t, s), theirs, atol=1e-6, rtol=0)


def test_orpo_equals_trl_orpo_trainer():
    """TRL's ORPO: NLL (a token mean over the batch's chosen answers) − mean(λ·log σ(log odds ratio))."""
    pytest.importorskip("trl")
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    t, raw = _terms(5, n_range=(2, 6))  # short answers: per-token means near 0, where log(1 − e^a) is delicate
    s = L.Settings(orpo_lambda=0.3)
    a, b = t.mean_logps()
    fake = SimpleNamespace(beta=0.3, accelerator=SimpleNamespace(device="cpu"))
    ratio_losses = ORPOTrainer.odds_ratio_loss(fake, a, b)[0]
    nll = -(raw[0].sum() / t.n_chosen.sum())
    theirs = nll - ratio_losses.mean()
    assert abs(L.LOSSES["orpo"](t, s).mean().item() - theirs.item()) < 1e-6


def test_odpo_by_hand():
    """No TRL implementation: ODPO's equation with its offset α·log(1 + gap), against NumPy."""
    t, raw = _terms(6)
    s = L.Settings(beta=0.1, odpo_alpha=0.5)
    z = 0.1 * ((raw[0] - raw[2]) - (raw[1] - raw[3])).numpy() - 0.5 * np.log1p(t.rating_gap.numpy())
    np.testing.assert_allclose(L.LOSSES["odpo"](t, s).numpy(), np.logaddexp(0, -z), rtol=1e-12)
    t.rating_gap = torch.zeros(B, dtype=torch.float64)  # no gap: DPO
    torch.testing.assert_close(L.LOSSES["odpo"](t, s), L.LOSSES["dpo"](t, s))


def test_every_margin_objective_has_an_sr_variant_equal_to_it_when_delta_is_zero():
    assert {b for _, b in objectives.sr_pairs()} == {o.name for o in objectives.OBJECTIVES.values() if o.sr}
    t, _ = _terms(7)
    t.chosen_p, t.rejected_p = t.chosen.clone(), t.rejected.clone()
    t.ref_chosen_p, t.ref_rejected_p = t.seq(t.chosen, t.n_chosen), t.seq(t.rejected, t.n_rejected)  # π = π_ref
    for sr, base in objectives.sr_pairs():
        s = L.Settings(beta=0.1, lam=1.0, label_smoothing=0.2)
        torch.testing.assert_close(L.LOSSES[sr](t, s), L.LOSSES[base](t, s), msg=sr)
        t2 = L.PairTerms(**{**vars(t), "ref_chosen_p": t.ref_chosen_p - 1.0})  # Δπ ≠ 0: the shift is applied
        assert not torch.allclose(L.LOSSES[sr](t2, s), L.LOSSES[base](t2, s)), sr


# ------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    d = tmp_path_factory.mktemp("rated")
    with (d / "rated.jsonl").open("w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": f"Question {i}: the sea?", "chosen": " yes good" + " ok" * (i % 3),
                                "rejected": " no bad", "chosen_rating": 5, "rejected_rating": 1 + i % 4}) + "\n")
    return d / "rated.jsonl"


def _cfg(model, data, out, objective, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(objective=objective, model=str(model), data=str(data), output=str(out),
                                 batch_size=4, learning_rate=1e-3, warmup_steps=0, max_steps=2, device="cpu",
                                 progress=False, ref_cache_dir=str(out) + "-cache", max_length=64,
                                 max_prompt_length=32), **kw})


@pytest.mark.parametrize("objective", [o for o in objectives.trainable() if o not in ("dpo", "ipo", "sr-dpo", "sr-ipo")])
def test_every_objective_trains(tiny_model_dir, rated, tmp_path, objective):
    train_mod.train(_cfg(tiny_model_dir, rated, tmp_path / objective, objective))
    info = json.loads((tmp_path / objective / "run_info.json").read_text())
    log = [json.loads(l) for l in (tmp_path / objective / "log.jsonl").read_text().splitlines()]
    o = objectives.get(objective)
    assert all(math.isfinite(r["loss"]) for r in log) and len(log) == 2
    assert (info["ref_cache"] is not None) == o.reference and (info["ref_model"] is not None) == o.reference
    assert set(info["settings"]) == set(o.settings)
    assert ("delta/mean" in log[0]) == o.refine and ("margin" in log[0]) == o.preference


@pytest.mark.parametrize("sr,base", [p for p in objectives.sr_pairs() if p[0] not in ("sr-dpo", "sr-ipo")])
def test_sr_variant_first_step_is_its_base(tiny_model_dir, rated, tmp_path, sr, base):
    a = train_mod.train(_cfg(tiny_model_dir, rated, tmp_path / base, base, max_steps=1))
    b = train_mod.train(_cfg(tiny_model_dir, rated, tmp_path / sr, sr, max_steps=1, lam=1.0))
    row = json.loads((tmp_path / sr / "log.jsonl").read_text().splitlines()[0])
    assert abs(row["delta/mean"]) < 1e-6
    from safetensors.torch import load_file

    wa, wb = (load_file(str(x / "model.safetensors")) for x in (a, b))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)


def test_reference_free_objectives_never_load_a_reference(tiny_model_dir, rated, tmp_path, monkeypatch):
    import trainer.refcache as rc

    def refuse(*a, **k):
        raise AssertionError("a reference-free objective ran the reference pass")

    monkeypatch.setattr(rc, "reference_logps", refuse)
    for name in ("simpo", "orpo"):
        train_mod.train(_cfg(tiny_model_dir, rated, tmp_path / name, name, max_steps=1))


def test_odpo_on_pairs_without_ratings_names_the_record(tiny_model_dir, tmp_path):
    from contracts.errors import UserError

    data = tmp_path / "plain.jsonl"
    data.write_text(json.dumps({"prompt": "sea?", "chosen": " yes", "rejected": " no", "chosen_rating": 4}) + "\n")
    with pytest.raises(UserError, match=r"plain\.jsonl:1 \(id 0\): field 'rejected_rating': missing, and the "
                                        r"objective reads the pairs' ratings"):
        train_mod.train(_cfg(tiny_model_dir, data, tmp_path / "odpo", "odpo", max_steps=1, batch_size=1))
