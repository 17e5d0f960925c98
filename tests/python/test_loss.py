"""Loss normalisation over packed steps: num_loss_tokens / num_items_in_batch
and loss_weights make the packed loss equal the unpacked one, for the
token-mean and the sequence-mean conventions, across micro-batches and
simulated ranks, on a tiny model; position_offset."""
import numpy as np
import pytest

import prepack

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not __import__("os").environ.get("PREPACK_LIBRARY"):
    pytest.skip("needs libprepack (PREPACK_LIBRARY; sanitizer builds cannot be "
                "loaded into Python)", allow_module_level=True)


def rows_and_sequences(seed=0, n=24):
    rng = np.random.default_rng(seed)
    seqs, masks = [], []
    for _ in range(n):
        length = int(rng.integers(2, 40))
        seqs.append(rng.integers(0, 90, length).astype(np.uint32))
        masks.append((rng.random(length) < 0.7).astype(np.uint8))
    rows = prepack.pack(seqs, max_seq_len=64)
    for r in rows:  # the rows' loss masks, from each sequence's mask
        r["loss_mask"] = np.concatenate([masks[int(i)] for i in r["seq_ids"]])
    return seqs, masks, rows


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32,
                                      intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128)
    m = transformers.LlamaForCausalLM(config)
    m.config._attn_implementation = "eager"
    return m.eval()


def token_losses(model, input_ids, position_ids, labels):
    """Cross-entropy of each position's prediction against labels (shifted:
    labels[i] is the target after token i), 0 where the label is -100."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, position_ids=position_ids,
                       use_cache=False).logits[0]
    ce = torch.nn.functional.cross_entropy(logits.double(), labels,
                                           ignore_index=-100, reduction="none")
    return ce


def unpacked(model, seqs, masks):
    """Each sequence alone: its tokens' losses (targets trained by mask)."""
    out = []
    for s, m in zip(seqs, masks):
        ids = torch.tensor(s, dtype=torch.long)[None]
        labels = torch.tensor(np.where(m[1:] == 1, s[1:].astype(np.int64), -100),
                              dtype=torch.long)
        labels = torch.cat([labels, torch.tensor([-100])])
        ce = token_losses(model, ids, torch.arange(len(s))[None], labels)
        out.append(ce[labels != -100])
    return out


@pytest.mark.parametrize("form", ["varlen", "hf"])
def test_packed_loss_equals_unpacked(model, form):
    seqs, masks, rows = rows_and_sequences()
    per_seq = unpacked(model, seqs, masks)
    token_mean = torch.cat(per_seq).sum() / sum(len(x) for x in per_seq)
    seq_mean = torch.stack([x.mean() for x in per_seq if len(x)]).mean()
    # 2 ranks x 2 micro-batches; each micro-batch a few rows, flat
    world, micro = 2, 2
    parts = prepack.balance(rows, world * micro)
    batches = [prepack.collate([rows[i] for i in p], form, tensors="pt",
                               num_items_in_batch=True, loss_weights=True)
               for p in parts]
    key = "num_items_in_batch" if form == "hf" else "num_loss_tokens"
    total_tokens = sum(b[key] for b in batches)  # an all-reduce in training
    total_seqs = sum(b["num_loss_sequences"] for b in batches)
    assert total_tokens == sum(len(x) for x in per_seq)
    assert total_seqs == sum(1 for x in per_seq if len(x))
    tok, seq = 0.0, 0.0
    for b in batches:
        ids = b["input_ids"].reshape(1, -1)
        pos = b["position_ids"].reshape(1, -1)
        labels = b["labels"].reshape(-1)
        weights = b["loss_weights"].reshape(-1).double()
        if form == "hf":  # unshifted: the target of position i is label i+1
            labels = torch.cat([labels[1:], torch.tensor([-100])])
            weights = torch.cat([weights[1:], torch.zeros(1, dtype=torch.double)])
        ce = token_losses(model, ids, pos, labels)
        tok = tok + ce.sum() / total_tokens
        seq = seq + (weights * ce).sum() / total_seqs
    assert float(tok) == pytest.approx(float(token_mean), rel=1e-6)
    assert float(seq) == pytest.approx(float(seq_mean), rel=1e-6)


def test_num_items_in_batch_matches_transformers(model):
    """transformers' loss with num_items_in_batch = the step's count sums
    to the token mean over the step."""
    seqs, masks, rows = rows_and_sequences(seed=1)
    per_seq = unpacked(model, seqs, masks)
    want = torch.cat(per_seq).sum() / sum(len(x) for x in per_seq)
    parts = prepack.balance(rows, 3)
    batches = [prepack.collate([rows[i] for i in p], "hf", tensors="pt",
                               num_items_in_batch=True) for p in parts]
    n = sum(b["num_items_in_batch"] for b in batches)
    got = 0.0
    for b in batches:
        b["num_items_in_batch"] = torch.tensor(n)
        with torch.no_grad():
            got += float(model(**b, use_cache=False).loss)
    assert got == pytest.approx(float(want), rel=1e-4)


@pytest.mark.parametrize("form", ["varlen", "flex", "padded", "hf"])
def test_loss_fields_in_every_form_and_backend(shard_set, form):
    shards_c = prepack.ShardSet(shard_set)
    shards_py = prepack.ShardSet(shard_set, backend="python")
    idx = [3, 0, 17, 5]
    opts = dict(num_items_in_batch=True, loss_weights=True, position_offset=2)
    a = prepack.collate([shards_py[i] for i in idx], form, **opts)
    b = shards_c.batch(idx, form, **opts)
    for k in a:
        if k == "mask_mod":
            continue
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k
    key = "num_items_in_batch" if form == "hf" else "num_loss_tokens"
    assert a[key] == int((np.asarray(a["labels"]) != -100).sum())
    w = np.asarray(a["loss_weights"])
    assert w.shape == np.asarray(a["labels"]).shape
    assert w.sum() == pytest.approx(a["num_loss_sequences"], rel=1e-5)
    plain = prepack.collate([shards_py[i] for i in idx], form)
    pos, pos0 = np.asarray(a["position_ids"]), np.asarray(plain["position_ids"])
    if form == "padded":
        real = np.asarray(plain["attention_mask"]) == 1
        assert (pos[real] == pos0[real] + 2).all() and (pos[~real] == 0).all()
    else:
        assert (pos == pos0 + 2).all()
    if form != "hf":
        assert plain["num_loss_tokens"] == a["num_loss_tokens"]
    else:
        assert "num_items_in_batch" not in plain
