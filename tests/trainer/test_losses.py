"""The four objectives against hand computations, an independent NumPy implementation and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer import losses as L


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def np_logsigmoid(z):
    return -np.logaddexp(0.0, -z)


def test_margin_and_dpo_by_hand():
    # m = (−10 − (−11)) − (−12 − (−11)) = 1 − (−1) = 2
    pc, pr, rc, rr = t(-10.0), t(-12.0), t(-11.0), t(-11.0)
    assert L.margin(pc, pr, rc, rr).item() == pytest.approx(2.0)
    # −log σ(0.1·2) = log(1 + e^{−0.2})
    assert L.dpo_loss(t(2.0), 0.1).item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-12)


def test_ipo_by_hand():
    # (m − 1/(2β))² with β = 0.1: target 5 nats, no β on the margin
    assert L.ipo_loss(t(2.0), 0.1).item() == pytest.approx(9.0)
    assert L.ipo_loss(t(5.0), 0.1).item() == pytest.approx(0.0)


def test_sr_by_hand():
    # Δπ = β·m(p⊕x) = 0.1·((−3+4) − (−6+5)) = 0.1·2 = 0.2; λ = 0.5 → shift λΔπ = 0.1
    delta = L.refinement(t(-3.0), t(-6.0), t(-4.0), t(-5.0), 0.1)
    assert delta.item() == pytest.approx(0.2)
    # Sr-DPO: −log σ(0.1·2 − 0.5·0.2) = −log σ(0.1)
    assert L.sr_dpo_loss(t(2.0), delta, 0.1, 0.5).item() == pytest.approx(math.log1p(math.exp(-0.1)))
    # Sr-IPO: (2 − 0.1 − 5)² = 9.61
    assert L.sr_ipo_loss(t(2.0), delta, 0.1, 0.5).item() == pytest.approx(9.61)


@pytest.mark.parametrize("seed", range(5))
def test_against_numpy_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = 64
    x = {k: rng.normal(-50, 20, n) for k in ("pc", "pr", "rc", "rr", "pc_p", "pr_p", "rc_p", "rr_p")}
    beta, lam = float(rng.uniform(0.01, 1.0)), float(rng.uniform(0, 2))
    m = (x["pc"] - x["rc"]) - (x["pr"] - x["rr"])
    d = beta * ((x["pc_p"] - x["rc_p"]) - (x["pr_p"] - x["rr_p"]))
    expected = {
        "dpo": -np_logsigmoid(beta * m),
        "ipo": (m - 1 / (2 * beta)) ** 2,
        "sr-dpo": -np_logsigmoid(beta * m - lam * d),
        "sr-ipo": (m - lam * d - 1 / (2 * beta)) ** 2,
    }
    tx = {k: torch.from_numpy(v) for k, v in x.items()}
    for obj in L.PAPER:
        out = L.preference_loss(obj, tx["pc"], tx["pr"], tx["rc"], tx["rr"], beta=beta, lam=lam,
                                pc_p=tx["pc_p"], pr_p=tx["pr_p"], rc_p=tx["rc_p"], rr_p=tx["rr_p"])
        np.testing.assert_allclose(out.losses.numpy(), expected[obj], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(out.margins.numpy(), m, rtol=1e-12)
        np.testing.assert_allclose(out.chosen_rewards.numpy(), beta * (x["pc"] - x["rc"]), rtol=1e-12)
        np.testing.assert_allclose(out.rejected_rewards.numpy(), beta * (x["pr"] - x["rr"]), rtol=1e-12)
        if obj.startswith("sr-"):
            np.testing.assert_allclose(out.delta.numpy(), d, rtol=1e-10, atol=1e-12)
        else:
            assert out.delta is None


def _inputs(n, seed, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=g, dtype=torch.float64) * 5 - 30).requires_grad_(requires_grad)
            for _ in range(8)]


@pytest.mark.parametrize("objective", ["sr-dpo", "sr-ipo", "dpo", "ipo"])
def test_gradients_match_the_specification(objective):
    beta, lam = 0.1, 0.7
    pc, pr, rc, rr, pc_p, pr_p, rc_p, rr_p = _inputs(16, 1)
    out = L.preference_loss(objective, pc, pr, rc, rr, beta=beta, lam=lam,
                            pc_p=pc_p, pr_p=pr_p, rc_p=rc_p, rr_p=rr_p)
    out.losses.sum().backward()
    m = ((pc - rc) - (pr - rr)).detach()
    d = beta * ((pc_p - rc_p) - (pr_p - rr_p)).detach()
    if objective == "dpo":
        dl_dm = -beta * torch.sigmoid(-beta * m)
    elif objective == "ipo":
        dl_dm = 2 * (m - 1 / (2 * beta))
    elif objective == "sr-dpo":  # −β·σ(λΔπ − β·m(x))·∇m(x)
        dl_dm = -beta * torch.sigmoid(lam * d - beta * m)
    else:
        dl_dm = 2 * (m - lam * d - 1 / (2 * beta))
    torch.testing.assert_close(pc.grad, dl_dm)
    torch.testing.assert_close(pr.grad, -dl_dm)
    torch.testing.assert_close(rc.grad, -dl_dm)  # in training the reference is frozen; here it is a leaf
    torch.testing.assert_close(rr.grad, dl_dm)
    # Δπ is under stop-gradient: the p⊕x log-probs never receive gradient
    for p in (pc_p, pr_p, rc_p, rr_p):
        assert p.grad is None


def test_sr_equals_base_when_policy_is_reference_or_lambda_zero():
    pc, pr, rc, rr, pc_p, pr_p, _, _ = _inputs(32, 2, requires_grad=False)
    for sr, base in (("sr-dpo", "dpo"), ("sr-ipo", "ipo")):
        ref = L.preference_loss(base, pc, pr, rc, rr, beta=0.1).losses
        # step 0: π = π_ref on p⊕x, so Δπ = 0 whatever λ
        at_start = L.preference_loss(sr, pc, pr, rc, rr, beta=0.1, lam=1.0,
                                     pc_p=pc_p, pr_p=pr_p, rc_p=pc_p.clone(), rr_p=pr_p.clone())
        assert torch.equal(at_start.delta, torch.zeros_like(at_start.delta))
        torch.testing.assert_close(at_start.losses, ref)
        no_lambda = L.preference_loss(sr, pc, pr, rc, rr, beta=0.1, lam=0.0,
                                      pc_p=pc_p, pr_p=pr_p, rc_p=rc, rr_p=rr)
        torch.testing.assert_close(no_lambda.losses, ref)


def test_sr_dpo_weights_pairs_the_prompted_policy_separates():
    # same m(x), larger Δπ → larger gradient weight σ(λΔπ − βm) (the paper's reading of the gradient)
    m = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    delta = torch.tensor([0.0, 2.0], dtype=torch.float64)
    L.sr_dpo_loss(m, delta, 0.1, 1.0).sum().backward()
    assert abs(m.grad[1]) > abs(m.grad[0])


def test_extreme_margins_stay_finite():
    m = t(-1e4, 1e4, 0.0)
    loss = L.dpo_loss(m, 0.1)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(1e3)  # −log σ(−1000) = 1000 (+ e^{−1000})
    assert loss[1].item() == pytest.approx(0.0, abs=1e-300)
    sr = L.sr_dpo_loss(m, t(-1e4, 1e4, 0.0), 0.1, 1.0)
    assert torch.isfinite(sr).all()


def test_bad_arguments_fail_clearly():
    x = t(0.0)
    with pytest.raises(ValueError, match="unknown objective"):
        L.preference_loss("kto", x, x, x, x, beta=0.1)
    with pytest.raises(ValueError, match="p ⊕ x"):
        L.preference_loss("sr-dpo", x, x, x, x, beta=0.1, lam=0.5)
    with pytest.raises(ValueError, match="beta"):
        L.preference_loss("dpo", x, x, x, x, beta=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("objective", L.PAPER)
def test_bf16_close_to_fp32_on_gpu(objective):
    ins = [x.detach() for x in _inputs(256, 3, requires_grad=False)]
    ref = L.preference_loss(objective, *ins[:4], beta=0.1, lam=0.5, pc_p=ins[4], pr_p=ins[5],
                            rc_p=ins[6], rr_p=ins[7]).losses
    # log-probs arrive in bf16 from a bf16 model; the loss must stay close (relative to bf16 rounding)
    low = [x.cuda().to(torch.bfloat16) for x in ins]
    got = L.preference_loss(objective, *low[:4], beta=0.1, lam=0.5, pc_p=low[4], pr_p=low[5],
                            rc_p=low[6], rr_p=low[7]).losses
    rounded = [x.to(torch.bfloat16).double() for x in ins]
    exact_on_rounded = L.preference_loss(objective, *rounded[:4], beta=0.1, lam=0.5, pc_p=rounded[4],
                                         pr_p=rounded[5], rc_p=rounded[6], rr_p=rounded[7]).losses
    assert got.dtype == torch.float32  # evaluated in fp32 even from bf16 inputs
    torch.testing.assert_close(got.double().cpu(), exact_on_rounded, rtol=1e-5, atol=1e-5)
    assert ref.shape == got.shape


def test_half_precision_inputs_are_evaluated_in_fp32():
    # CPU check of the upcast (the GPU test above covers real bf16 tensors on CUDA)
    x = [v.detach().to(torch.bfloat16) for v in _inputs(8, 4, requires_grad=False)]
    out = L.preference_loss("sr-ipo", *x[:4], beta=0.1, lam=0.5, pc_p=x[4], pr_p=x[5], rc_p=x[6], rr_p=x[7])
    assert out.losses.dtype == torch.float32 and out.delta.dtype == torch.float32
    exact = L.preference_loss("sr-ipo", *[v.double() for v in x[:4]], beta=0.1, lam=0.5,
                              pc_p=x[4].double(), pr_p=x[5].double(), rc_p=x[6].double(), rr_p=x[7].double())
    torch.testing.assert_close(out.losses.double(), exact.losses, rtol=1e-5, atol=1e-4)
