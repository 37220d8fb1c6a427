"""Shared-prompt packing: each preference pair is one sequence [c, y⁺, y⁻] (c = x, or p ⊕ x for the Sr
pass), several pairs to a row, no padding but at the end of a row.

In a packed sequence y⁻ attends to c but not to y⁺, and its position ids continue from c, so every
token sees exactly the context it has in the padded [2B, T] batch of trainer.data.collate: the
log-probs are the same, while c is computed once instead of twice and short pairs carry no padding
(prefix sharing, Wang & Hegde 2024, arXiv 2410.20305)::

    tokens   c₀ c₁ c₂ y⁺₀ y⁺₁ y⁻₀ y⁻₁ y⁻₂ │ next pair … │ pad
    position 0  1  2  3   4   3   4   5    │ 0 …        │
    y⁺₀ and y⁻₀ are both predicted from the hidden state of c₂; the last state of y⁺ predicts nothing.

A query sees a key if the key is not after it, belongs to the same pair, and is in c or in the query's
own completion. How attention gets there depends on the model's attention implementation:
  * SDPA on a CPU: per pair, two SDPA calls on one unpadded row — [c, y⁺] causal, then y⁻ over
    [c, y⁻], causal aligned at the end — through an attention function registered with transformers
    (``srdpo_pairs``); nothing is masked or padded;
  * SDPA on CUDA: FlexAttention with a BlockMask built from the pair layout (no [T, T] mask is ever
    made), whose block sparsity skips what a query cannot see;
  * eager attention (and SDPA where neither applies): a dense [R, 1, T, T] mask, additive or boolean.

A compiled kernel (FlexAttention's, or the body under ``--compile``) is compiled once per input shape,
so where one runs, rows are padded to a few bucketed shapes (:func:`bucket`): a run compiles a handful
of times, not once per micro-batch. Every fall-back from the attention asked for (to dense masks, or to
padded batches) is counted in :attr:`PairBatcher.fallbacks` and logged once as a warning; the trainer
writes the counts to log.jsonl and run_info.json.

Packing is used where it is exact for the model: a static check (an attention implementation that
takes custom masks, every layer an attention layer, position ids) and, where the caller asks, a
numerical check of a few pairs against the padded batch. A model that fails either gets padded
batches, with one line in the log saying why.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.data import TokenizedPair, collate
from trainer.logprobs import Targets, _body, _text_config

log = logging.getLogger(__name__)

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3  # the role of each token of a packed row
MASKABLE = ("sdpa", "eager", "flex_attention")  # attention implementations that take a custom mask
PAIRS = "srdpo_pairs"  # the per-pair attention's name in transformers' attention registry
ATTENTION_LAYERS = ("full_attention", "sliding_attention")


def context(p: TokenizedPair, refine: bool) -> list[int]:
    return p.refine_prompt_ids if refine else p.prompt_ids


def pair_tokens(p: TokenizedPair, refine: bool = False) -> int:
    """Tokens of the packed sequence [c, y⁺, y⁻]."""
    return len(context(p, refine)) + len(p.chosen_ids) + len(p.rejected_ids)


def padded_tokens(p: TokenizedPair, refine: bool = False) -> int:
    """Length of the pair's longer row in a padded batch."""
    return len(context(p, refine)) + max(len(p.chosen_ids), len(p.rejected_ids))


def first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped into rows of at most ``capacity`` (a larger item gets a row alone)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = next((r for r, f in enumerate(free) if f >= sizes[i]), None)
        if r is None:
            rows.append([i])
            free.append(capacity - sizes[i])
        else:
            rows[r].append(i)
            free[r] -= sizes[i]
    return rows


def bucket(n: int, unit: int = 1) -> int:
    """The smallest size ≥ ``n`` of the form unit·2^k or unit·3·2^k (1, 2, 3, 4, 6, 8, 12, 16, 24, …): a
    compiled kernel sees a few shapes over a run, with at most a third of them padding."""
    k = max(1, -(-n // unit))
    p = 1 << (k - 1).bit_length()  # the power of two at or above k
    return (p * 3 // 4 if p >= 4 and p * 3 // 4 >= k else p) * unit


def pack(pairs: list[TokenizedPair], *, refine: bool = False, pad_id: int = 0, row_tokens: int | None = None,
         multiple: int = 1, buckets: bool = False) -> dict:
    """Packed rows of ``pairs`` (CPU tensors): input_ids, position_ids, doc (pair index, −1 on padding),
    role [R, T], spans [B, 5] (row, start, |c|, |y⁺|, |y⁻| of each pair) and the Targets (pair i's chosen
    tokens count towards output i, its rejected towards B + i, the order of the padded batch). Rows hold at
    most ``row_tokens`` tokens (default and at least: the longest pair), filled first-fit decreasing; T is
    rounded up to a ``multiple``. ``buckets``: T is rounded up to :func:`bucket` (of ``multiple``) and rows
    hold up to that; the number of rows too, with rows of padding."""
    sizes = [pair_tokens(p, refine) for p in pairs]
    capacity = max(row_tokens or 0, max(sizes))
    if buckets:
        capacity = bucket(capacity, multiple)
    rows = first_fit_decreasing(sizes, capacity)
    R, T, B = len(rows), max(sum(sizes[i] for i in row) for row in rows), len(pairs)
    T = bucket(T, multiple) if buckets else -(-T // multiple) * multiple
    if buckets:
        R = bucket(R)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    doc = torch.full((R, T), -1, dtype=torch.long)
    role = torch.full((R, T), PAD, dtype=torch.long)
    src: list[int] = []
    tokens: list[int] = []
    seq: list[int] = []
    spans: list[tuple[int, int, int, int, int]] = []
    for r, row in enumerate(rows):
        o = 0
        for i in row:
            p = pairs[i]
            c, a, b = context(p, refine), p.chosen_ids, p.rejected_ids
            n = len(c) + len(a) + len(b)
            ids[r, o:o + n] = torch.tensor(c + a + b)
            pos[r, o:o + n] = torch.cat([torch.arange(len(c) + len(a)), torch.arange(len(c), len(c) + len(b))])
            doc[r, o:o + n] = i
            role[r, o:o + len(c)] = PROMPT
            role[r, o + len(c):o + len(c) + len(a)] = CHOSEN
            role[r, o + len(c) + len(a):o + n] = REJECTED
            last = r * T + o + len(c) - 1  # c's last state predicts the first token of both completions
            src += list(range(last, last + len(a)))
            src += [last] + list(range(last + len(a) + 1, last + len(a) + len(b)))
            tokens += a + b
            seq += [i] * len(a) + [B + i] * len(b)
            spans.append((r, o, len(c), len(a), len(b)))
            o += n
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)
    return {"input_ids": ids, "position_ids": pos, "doc": doc, "role": role, "spans": as_long(spans),
            "targets": Targets(as_long(src), as_long(tokens), as_long(seq), 2 * B)}


def sees(doc_q: Tensor, role_q: Tensor, doc_k: Tensor, role_k: Tensor, q: Tensor, k: Tensor) -> Tensor:
    """Query q attends to key k: not after it, same pair, k in the context or in q's completion (a
    padding position sees only itself, so that no row of the softmax is empty)."""
    same = (doc_q == doc_k) & ((role_k == PROMPT) | (role_k == role_q))
    return (k <= q) & same & ((doc_q >= 0) | (q == k))


def dense_mask(doc: Tensor, role: Tensor) -> Tensor:
    """[R, 1, T, T] boolean mask (True: attend)."""
    i = torch.arange(doc.shape[1], device=doc.device)
    m = sees(doc[:, :, None], role[:, :, None], doc[:, None, :], role[:, None, :], i[:, None], i[None, :])
    return m[:, None]


def mask_mod_of(doc: Tensor, role: Tensor):
    """FlexAttention's mask_mod of a packed layout (:func:`sees` on the positions' pair and role)."""

    def mask_mod(b, h, q, k):
        return sees(doc[b, q], role[b, q], doc[b, k], role[b, k], q, k)

    return mask_mod


def visible_intervals(doc: Tensor, role: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The keys each query sees (:func:`sees`) as two intervals [lo1, hi1] ∪ [lo2, hi2] (empty: lo > hi):
    a context or chosen query sees its pair from the start up to itself; a rejected query sees its
    pair's context and its own completion up to itself; a padding position sees itself."""
    R, T = doc.shape
    pos = torch.arange(T, device=doc.device).expand(R, T)
    first = lambda new: torch.where(new, pos, torch.zeros_like(pos)).cummax(1).values  # noqa: E731
    new_pair = torch.ones_like(doc, dtype=torch.bool)
    new_pair[:, 1:] = doc[:, 1:] != doc[:, :-1]
    new_part = new_pair.clone()
    new_part[:, 1:] |= role[:, 1:] != role[:, :-1]
    start, part_start = first(new_pair), first(new_part)  # of the pair, of its context / completion
    context_end = torch.where(role == PROMPT, pos, torch.full_like(pos, -1)).cummax(1).values
    pad, rejected = doc < 0, role == REJECTED
    lo1 = torch.where(pad, pos, start)
    hi1 = torch.where(rejected, context_end, pos)
    lo2 = torch.where(rejected, part_start, pos + 1)
    return lo1, hi1, lo2, pos


def block_mask(doc: Tensor, role: Tensor, block: int = 128):
    """The mask of :func:`dense_mask` as a FlexAttention BlockMask, its blocks classified from the pair
    layout (each query sees at most two intervals of keys, :func:`visible_intervals`) without ever
    making the [T, T] mask: a kv block is *full* for a query block when every query sees all of it,
    *partial* when some query sees some of it (FlexAttention applies the mask_mod there), else skipped.
    The same classification as ``create_block_mask`` (tested), at a cost linear in T."""
    from torch.nn.attention.flex_attention import BlockMask

    R, T = doc.shape
    if T % block:
        raise ValueError(f"rows of {T} tokens: a multiple of {block} expected")
    n = T // block
    lo1, hi1, lo2, hi2 = (t.view(R, n, 1, block) for t in visible_intervals(doc, role))
    k0 = (torch.arange(n, device=doc.device) * block).view(1, 1, n, 1)
    k1 = k0 + block - 1
    meets = lambda lo, hi: (lo <= k1) & (hi >= k0) & (lo <= hi)  # noqa: E731
    covers = lambda lo, hi: (lo <= k0) & (hi >= k1)  # noqa: E731
    any_ = (meets(lo1, hi1) | meets(lo2, hi2)).any(-1)  # [R, q blocks, kv blocks]
    full = (covers(lo1, hi1) | covers(lo2, hi2)).all(-1)
    partial = any_ & ~full

    def blocks(m: Tensor) -> tuple[Tensor, Tensor]:
        count = m.sum(-1, dtype=torch.int32)
        order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # listed ones first
        return count[:, None], order[:, None]

    (kv_n, kv_i), (full_n, full_i) = blocks(partial), blocks(full)
    return BlockMask.from_kv_blocks(kv_n, kv_i, full_n, full_i, BLOCK_SIZE=block, mask_mod=mask_mod_of(doc, role),
                                    seq_lengths=(T, T))


def pairs_attention(module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, pair_spans=None,
                    **kwargs):
    """A transformers attention function (q, k, v: [1, heads, T, head_dim]): with ``pair_spans`` (pack's
    spans of a single row), two SDPA calls per pair, [c, y⁺] causal, then y⁻ over [c, y⁻] with the
    causal diagonal at the end; without, transformers' SDPA attention (padded batches)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if pair_spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if kwargs.get("softcap") is not None:
        raise ValueError("per-pair SDPA attention does not support softcap")
    sdpa = lambda q, k, v, **kw: F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                                 enable_gqa=q.shape[1] != k.shape[1], **kw)
    out = []
    for _, s, c, a, b in pair_spans.tolist():
        e = s + c + a
        out.append(sdpa(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True))
        kv = [torch.cat([t[:, :, s:s + c], t[:, :, e:e + b]], 2) for t in (key, value)]
        mask = torch.ones(b, c + b, dtype=torch.bool, device=query.device).tril(c)  # y⁻ᵢ sees c and y⁻₀..ᵢ
        out.append(sdpa(query[:, :, e:e + b], *kv, attn_mask=mask))
    return torch.cat(out, 2).transpose(1, 2).contiguous(), None


def _register_pairs_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(PAIRS, pairs_attention)
    AttentionMaskInterface.register(PAIRS, sdpa_mask)  # padded batches: the masks SDPA gets


def packing_unsupported(model) -> str | None:
    """Why packed rows would not be exact for ``model`` (None: they are, as far as can be told statically)."""
    cfg = _text_config(model)
    impl = cfg._attn_implementation
    if impl not in MASKABLE + (PAIRS,):
        return f"attention implementation {impl!r} takes no custom mask (packing needs one of {', '.join(MASKABLE)})"
    other = sorted(set(getattr(cfg, "layer_types", None) or ()) - set(ATTENTION_LAYERS))
    if other:
        return f"layers of type {', '.join(other)} do not take an attention mask"
    if getattr(cfg, "attention_chunk_size", None):
        return "chunked attention is not reproduced by the packed mask"
    if "position_ids" not in inspect.signature(_body(model).forward).parameters:
        return "its forward takes no position ids"
    return None


def sliding_window(model) -> int | None:
    """The attention window of a model with sliding-window layers (the packed mask has none, so a pair
    is packed only if each of its sequences fits in the window, where windowing changes nothing)."""
    cfg = _text_config(model)
    w = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    return w if w and (types is None or "sliding_attention" in types) else None


_said: set[str] = set()


def note(msg: str, level: int = logging.INFO) -> None:
    """Log ``msg`` once per process (the batcher is built for every scoring call)."""
    if msg not in _said:
        _said.add(msg)
        log.log(level, msg)


class PairBatcher:
    """The forward inputs of CompletionLogps for a list of pairs, chosen then rejected: packed rows where
    packing is exact for the model, else the padded [2B, T] batch.

    A model with SDPA attention is switched to the per-pair attention (CPU) or to FlexAttention (CUDA);
    if that fails :meth:`verify`, it is switched back and packing goes on with dense masks. ``compiled``
    (the body runs under torch.compile): no per-pair attention (its loop over the pairs would recompile
    every batch), and rows in bucketed shapes, as FlexAttention always gets them.

    ``fallbacks`` counts every time a batch does not get what was asked for (packing, and the attention
    packing first chose), by reason; each reason is also logged once as a warning.
    """

    def __init__(self, model, *, packing: bool = True, pad_id: int = 0, device=None, compiled: bool = False):
        self.model, self.pad_id, self.compiled = model, pad_id, compiled
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.fallbacks: Counter[str] = Counter()
        self.shapes: set[tuple[int, int]] = set()  # packed (rows, T) of the bucketed (compiled) paths
        reason = packing_unsupported(model) if packing else None
        if reason:
            self._fall_back(f"padded batches: {reason}", f"packing off for {type(model).__name__}: {reason}; "
                                                         "padded batches")
        self.packing = packing and reason is None
        self.switched_from = None  # the implementation the per-pair or Flex attention replaced
        if self.packing and self.attn == "sdpa":
            if self.device.type == "cuda":
                self._switch("flex_attention")
            elif not compiled:
                self._switch(PAIRS)
        self.mask_dtype = model.get_input_embeddings().weight.dtype
        self.window = sliding_window(model)

    @property
    def attn(self) -> str:
        return _text_config(self.model)._attn_implementation

    @property
    def attention(self) -> str:
        """What packed batches run: the attention implementation, or "padded"."""
        return self.attn if self.packing else "padded"

    def _fall_back(self, reason: str, message: str | None = None) -> None:
        """Count a fall-back by ``reason``; its ``message`` (default: the reason) is logged once, a warning."""
        self.fallbacks[reason] += 1
        note(message or f"packing fall-back: {reason}", logging.WARNING)

    def _switch(self, impl: str) -> None:
        try:
            if impl == PAIRS:
                _register_pairs_attention()
            before = self.attn
            self.model.set_attn_implementation(impl)
            self.switched_from = before
            note(f"packing: {impl} attention")
        except Exception as e:  # noqa: BLE001 — an old torch, a model that cannot switch
            self._fall_back(f"dense masks: no {impl} attention ({type(e).__name__}: {e})",
                            f"packing: no {impl} attention ({type(e).__name__}: {e}); dense masks")

    def __call__(self, pairs: list[TokenizedPair], *, refine: bool = False, row_tokens: int | None = None) -> dict:
        if not self.packing or not self._fits(pairs, refine):
            return self.padded(pairs, refine=refine)
        attn = self.attn
        if attn == PAIRS:  # one row, no padding: attention runs pair by pair
            row_tokens = sum(pair_tokens(p, refine) for p in pairs)
        flex = attn == "flex_attention"
        buckets = flex or self.compiled
        # FlexAttention works in 128-token blocks; compiled kernels get bucketed shapes (few compilations)
        b = pack(pairs, refine=refine, pad_id=self.pad_id, row_tokens=row_tokens,
                 multiple=128 if flex else (16 if buckets else 1), buckets=buckets)
        if buckets:
            self.shapes.add(tuple(b["input_ids"].shape))
        out = {"input_ids": b["input_ids"].to(self.device), "position_ids": b["position_ids"].to(self.device),
               "targets": b["targets"].to(self.device)}
        doc, role = b["doc"].to(self.device), b["role"].to(self.device)
        if attn == PAIRS:
            # a 4D placeholder: transformers hands a 4D mask to the attention untouched, and it needs none
            out.update(attention_mask=torch.ones(1, 1, 1, 1, dtype=torch.bool, device=self.device),
                       pair_spans=b["spans"])
        elif flex:
            out["attention_mask"] = block_mask(doc, role)
        else:
            mask = dense_mask(doc, role)
            if attn == "eager":  # additive, as transformers builds it for eager attention
                mask = torch.zeros(mask.shape, dtype=self.mask_dtype, device=self.device).masked_fill_(
                    ~mask, torch.finfo(self.mask_dtype).min)
            out["attention_mask"] = mask
        return out

    def padded(self, pairs: list[TokenizedPair], *, refine: bool = False) -> dict:
        b = collate(pairs, self.pad_id, refine=refine)
        pre = "refine_" if refine else ""
        return {k: b[pre + k].to(self.device) for k in ("input_ids", "attention_mask", "loss_mask")}

    def _fits(self, pairs: list[TokenizedPair], refine: bool) -> bool:
        if self.window is None or all(padded_tokens(p, refine) <= self.window for p in pairs):
            return True
        self._fall_back(f"padded batches: pairs longer than the sliding window ({self.window} tokens)",
                        f"packing: pairs longer than the sliding window ({self.window} tokens) go in padded batches")
        return False

    @torch.no_grad()
    def verify(self, wrapper, pairs: list[TokenizedPair], *, atol: float | None = None) -> float | None:
        """Packed against padded log-probs (per-token mean) of the shortest 4 of ``pairs``, packed into one
        row; if they differ by more than ``atol`` (default 1e-4, 2e-2 in half precision) packing is turned
        off, with one line in the log. Returns the largest difference (None if packing is off)."""
        if not self.packing:
            return None
        if atol is None:
            half = (next(wrapper.parameters()).dtype != torch.float32
                    or torch.is_autocast_enabled(self.device.type))
            atol = 2e-2 if half else 1e-4
        sample = sorted(pairs, key=pair_tokens)[:4]
        diff, why = self._compare(wrapper, sample)
        if not diff <= atol and self.switched_from:
            self._fall_back(f"dense masks: {self.attn} attention failed the check",
                            f"packing: {self.attn} attention failed the check ({why}); back to {self.switched_from} "
                            "with dense masks")
            self.model.set_attn_implementation(self.switched_from)
            self.switched_from = None
            diff, why = self._compare(wrapper, sample)
        if not diff <= atol:
            self._fall_back("padded batches: packed log-probs failed the check",
                            f"packing off: {why} (tolerance {atol:g}); padded batches from here on")
            self.packing = False
            return None
        log.info("packing verified against padded batches (max diff %.2e nats/token, %s masks)", diff, self.attn)
        return diff

    def _compare(self, wrapper, sample: list[TokenizedPair]) -> tuple[float, str]:
        was = wrapper.training
        wrapper.eval()
        try:
            packed, _ = wrapper(**self(sample, row_tokens=sum(map(pair_tokens, sample))), reduce="mean")
            padded, _ = wrapper(**self.padded(sample), reduce="mean")
            diff = (packed.float() - padded.float()).abs().max().item()
            return diff, f"packed log-probs differ from the padded batch's by {diff:.3g} nats/token"
        except Exception as e:  # noqa: BLE001 — a model that rejects the mask: fall back, saying so
            return float("nan"), f"the packed forward failed ({type(e).__name__}: {e})"
        finally:
            wrapper.train(was)


def micro_batches(pairs: list[TokenizedPair], idx: list[int], *, max_pairs: int | None = None,
                  max_tokens: int | None = None, packing: bool = True) -> list[list[int]]:
    """Consecutive runs of ``idx`` (the trainer sorts it longest first) of at most ``max_pairs`` pairs and
    ``max_tokens`` tokens of the gradient forward (packed: Σ |x| + |y⁺| + |y⁻|; padded: 2 · B · longest
    row). A pair over the token budget on its own still makes a micro-batch."""
    out: list[list[int]] = []
    cur: list[int] = []
    used = longest = 0
    for i in idx:
        size, row = pair_tokens(pairs[i]), padded_tokens(pairs[i])
        tokens = used + size if packing else 2 * (len(cur) + 1) * max(longest, row)
        if cur and ((max_pairs and len(cur) >= max_pairs) or (max_tokens and tokens > max_tokens)):
            out.append(cur)
            cur, used, longest = [], 0, 0
        cur.append(i)
        used, longest = used + size, max(longest, row)
    if cur:
        out.append(cur)
    return out
