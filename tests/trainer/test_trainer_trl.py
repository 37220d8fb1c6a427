"""DPO and IPO losses equal TRL's DPOTrainer on the same tiny model and batch (TRL: test-only)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

RECORDS = [
    {"prompt": "Question: is the sea wet?", "chosen": " yes it is", "rejected": " no"},
    {"prompt": "Write a short poem about the sea.", "chosen": " The sea is blue and good.",
     "rejected": " bad"},
    {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " The capital is Rome."},
    {"prompt": "0 1 2 3", "chosen": " 4 5", "rejected": " 9 9 9 9"},
]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from trainer.modeling import load_causal_lm

    ref, tok = load_causal_lm(tiny_model_dir, dtype="fp32", device="cpu")
    policy, _ = load_causal_lm(tiny_model_dir, dtype="fp32", device="cpu", with_tokenizer=False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference so the losses are not trivial
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy, ref, tok


def _trl_loss(policy, ref, tok, loss_type, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / loss_type), beta=0.1, loss_type=[loss_type], report_to=[],
                     max_length=None, per_device_train_batch_size=len(RECORDS), use_cpu=True,
                     gradient_checkpointing=False, precompute_ref_log_probs=False, bf16=False,
                     dataset_num_proc=None)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(RECORDS),
                         processing_class=tok)
    rows = [trainer.train_dataset[i] for i in range(len(RECORDS))]
    batch = trainer.data_collator(rows)
    policy.eval()
    loss = trainer.compute_loss(trainer.model, batch)
    return loss, rows


@pytest.mark.parametrize("loss_type,objective,reduce", [("sigmoid", "dpo", "sum"), ("ipo", "ipo", "mean")])
def test_loss_equals_trl(models, loss_type, objective, reduce, tmp_path):
    from trainer.data import DataConfig, TokenizedPair, tokenize_pairs
    from trainer.losses import preference_loss
    from trainer.scoring import pair_logps

    policy, ref, tok = models
    trl_loss, rows = _trl_loss(policy, ref, tok, loss_type, tmp_path)
    # Same token sequences as TRL's …
    pairs = [TokenizedPair(i, r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for i, r in enumerate(rows)]
    # … which are also what our own tokenization produces for these plain-text records.
    ours_tok, _ = tokenize_pairs(RECORDS, tok, DataConfig())
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in ours_tok] == \
        [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]
    pl = pair_logps(policy, pairs, pad_id=tok.pad_token_id, batch_size=3, reduce=reduce, refine=False,
                    progress=False)
    rl = pair_logps(ref, pairs, pad_id=tok.pad_token_id, batch_size=2, reduce=reduce, refine=False,
                    progress=False)
    ours = preference_loss(objective, pl.chosen, pl.rejected, rl.chosen, rl.rejected, beta=0.1).losses.mean()
    assert abs(ours.item() - trl_loss.item()) < 1e-5, (ours.item(), trl_loss.item())
    assert trl_loss.item() > 0 and abs(ours.item() - (0.6931 if objective == "dpo" else 25.0)) > 1e-3
