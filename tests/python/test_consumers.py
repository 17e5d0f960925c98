"""prepack's batches against the real consumers, at the versions pinned in
requirements/test.txt: transformers' DataCollatorWithFlattening, a tiny
random-weight LlamaForCausalLM under each attention implementation
transformers has on CPU, torch's flex_attention and
scaled_dot_product_attention; and check_isolation, on a clean model and on
leaking ones."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import prepack  # noqa: E402
from prepack.isolation import check_isolation  # noqa: E402

SEQS = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21]]
IMPLEMENTATIONS = ["eager", "sdpa", "flex_attention"]


def one_row(seqs, mask=None):
    ids = np.concatenate([np.asarray(s, np.uint32) for s in seqs])
    cu = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int32)
    row = {"input_ids": ids, "cu_seqlens": cu,
           "seq_ids": np.arange(len(seqs), dtype=np.uint64)}
    if mask is not None:
        row["loss_mask"] = np.asarray(mask, np.uint8)
    return row


def tiny_llama(impl, vocab=64):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=impl,
                                          dtype=torch.float32)
    return model.eval()


# ---- the collator -----------------------------------------------------------

def test_hf_form_equals_data_collator_with_flattening(shard_set):
    """Every key, dtype, shape and value, for rows of the corpus (with
    their loss masks: the collator takes them as labels)."""
    from transformers import DataCollatorWithFlattening
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True,
                                          return_seq_idx=True)
    s = prepack.ShardSet(shard_set)
    for first in (0, 7, 100):
        rows = [s[i] for i in range(first, first + 3)]
        features = []
        for r in rows:
            cu = r["cu_seqlens"]
            for j in range(len(cu) - 1):
                ids = r["input_ids"][cu[j]:cu[j + 1]].astype(np.int64)
                f = {"input_ids": ids.tolist()}
                if "loss_mask" in r:
                    m = r["loss_mask"][cu[j]:cu[j + 1]]
                    f["labels"] = np.where(m == 1, ids, -100).tolist()
                features.append(f)
        want = collator(features, return_tensors="pt")
        got = prepack.collate(rows, "hf", tensors="pt",
                              return_flash_attn_kwargs=True,
                              return_seq_idx=True)
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert got[key].dtype == value.dtype, key
                assert got[key].shape == value.shape, key
                assert torch.equal(got[key], value), key
            else:
                assert type(got[key]) is type(value) and got[key] == value, key


# ---- a tiny Llama: packed equals alone -------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_tiny_llama_packed_logits_and_loss_equal_alone(impl):
    model = tiny_llama(impl)
    batch = prepack.collate([one_row(SEQS)], "hf", tensors="pt")
    with torch.no_grad():
        packed = model(**batch, use_cache=False)
        scale, cu = 0.0, np.cumsum([0] + [len(s) for s in SEQS])
        loss_sum, count = 0.0, 0
        for i, s in enumerate(SEQS):
            ids = torch.tensor([s])
            alone = model(input_ids=ids, labels=ids, use_cache=False)
            part = packed.logits[0, cu[i]:cu[i + 1]]
            scale = max(scale, float(alone.logits.abs().max()))
            diff = float((part - alone.logits[0]).abs().max())
            assert diff <= 1e-5 * scale, (impl, i, diff, scale)
            loss_sum += float(alone.loss) * (len(s) - 1)
            count += len(s) - 1
    assert abs(float(packed.loss) - loss_sum / count) <= 1e-5 * loss_sum / count


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_check_isolation_clean_on_tiny_llama(impl):
    report = check_isolation(tiny_llama(impl), SEQS)
    assert not report.leaks, str(report)
    assert len(report.per_sequence) == len(SEQS)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_check_isolation_catches_an_all_ones_attention_mask(impl):
    """A 2-D all-ones attention_mask silently turns off transformers'
    position_ids-derived block-diagonal mask: documents leak."""
    total = sum(len(s) for s in SEQS)
    report = check_isolation(
        tiny_llama(impl), SEQS,
        packed_kwargs={"attention_mask": torch.ones(1, total, dtype=torch.long)})
    assert report.leaks, str(report)


def test_padded_4d_mask_through_hf_sdpa_is_clean_and_eager_leaks():
    """Recorded at the pinned transformers: a boolean [B, 1, L, L] mask is
    honoured by sdpa; eager adds it as numbers (True = 1.0) and so leaks.
    the README says to feed transformers form="hf" (or sdpa for the
    4-D mask)."""
    assert not check_isolation(tiny_llama("sdpa"), SEQS, form="padded").leaks
    assert check_isolation(tiny_llama("eager"), SEQS, form="padded").leaks


class BoundaryBlindAttention(torch.nn.Module):
    """One causal attention layer over the whole row: it ignores
    position_ids and every document boundary."""

    def __init__(self, vocab=64, d=16):
        super().__init__()
        torch.manual_seed(1)
        self.emb = torch.nn.Embedding(vocab, d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, input_ids, position_ids=None, attention_mask=None,
                use_cache=None):
        q, k, v = self.qkv(self.emb(input_ids)).chunk(3, dim=-1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True)
        return self.head(out)


def test_check_isolation_flags_a_model_blind_to_boundaries():
    report = check_isolation(BoundaryBlindAttention(), SEQS)
    assert report.leaks, str(report)
    # the first sequence sees nothing before it: only rounding differs
    assert report.per_sequence[0] <= 1e-5 * report.scale
    assert "LEAK" in str(report)


# ---- torch's kernels directly --------------------------------------------------

def per_sequence_attention(q, k, v, cu):
    out = torch.zeros_like(q)
    for i in range(len(cu) - 1):
        s, e = int(cu[i]), int(cu[i + 1])
        out[:, :, s:e] = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True)
    return out


def test_flex_form_with_flex_attention_equals_per_sequence():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    batch = prepack.collate([one_row(SEQS[:2]), one_row(SEQS[2:])], "flex",
                            tensors="pt")
    t = batch["input_ids"].shape[-1]
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, t, 8) for _ in range(3))
    mask = create_block_mask(batch["mask_mod"], None, None, t, t, device="cpu")
    got = flex_attention(q, k, v, block_mask=mask)
    cu = np.cumsum([0] + [len(s) for s in SEQS])
    want = per_sequence_attention(q, k, v, cu)
    assert torch.allclose(got, want, atol=1e-5)


def test_padded_form_4d_mask_through_sdpa_equals_per_sequence():
    rows = [one_row(SEQS[:2]), one_row(SEQS[2:])]
    batch = prepack.collate(rows, "padded", tensors="pt", mask_4d=True,
                            max_seq_len=12)
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 2, 12, 8) for _ in range(3))
    got = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=batch["mask_4d"])
    for b, r in enumerate(rows):
        t = len(r["input_ids"])
        want = per_sequence_attention(q[b:b + 1, :, :t], k[b:b + 1, :, :t],
                                      v[b:b + 1, :, :t], r["cu_seqlens"])
        assert torch.allclose(got[b:b + 1, :, :t], want, atol=1e-5)
