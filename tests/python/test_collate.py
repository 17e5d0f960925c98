"""Collation forms, checked against definitions written out here."""
import numpy as np
import pytest

import prepack


def row(seqs, mask=None):
    ids = np.array([t for s in seqs for t in s], np.uint16)
    cu = np.cumsum([0] + [len(s) for s in seqs]).astype(np.int32)
    r = {"input_ids": ids, "cu_seqlens": cu,
         "seq_ids": np.arange(len(seqs), dtype=np.uint64)}
    if mask is not None:
        r["loss_mask"] = np.array(mask, np.uint8)
    return r


ROWS = [row([[5, 6, 7], [8, 9]], mask=[1, 1, 0, 0, 1]), row([[1, 2, 3, 4]])]


def test_varlen():
    b = prepack.collate(ROWS, "varlen")
    assert b["input_ids"].tolist() == [5, 6, 7, 8, 9, 1, 2, 3, 4]
    assert b["cu_seqlens"].tolist() == [0, 3, 5, 9]
    assert b["cu_seqlens"].dtype == np.int32
    assert b["max_seqlen"] == 4
    assert b["position_ids"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    # shifted: 5->6, 6->7 is masked, 7 ends, 8->9, 9 ends, 1->2, 2->3, 3->4
    assert b["labels"].tolist() == [6, -100, -100, 9, -100, 2, 3, 4, -100]


def test_hf_matches_data_collator_with_flattening():
    b = prepack.collate(ROWS, "hf", return_flash_attn_kwargs=True,
                        return_seq_idx=True)
    assert b["input_ids"].shape == (1, 9) and b["input_ids"].dtype == np.int64
    # unshifted: -100 at each sequence's first token and masked tokens
    assert b["labels"].tolist() == [[-100, 6, -100, -100, 9, -100, 2, 3, 4]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert b["cu_seq_lens_q"].tolist() == [0, 3, 5, 9]
    assert b["max_length_k"] == 4 and isinstance(b["max_length_q"], int)
    assert b["seq_idx"].tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]
    assert "attention_mask" not in b


def test_flex_documents_never_join_rows():
    b = prepack.collate(ROWS, "flex")
    doc = b["doc_ids"]
    assert doc.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    m = b["mask_mod"]
    assert m(0, 0, 2, 0) and m(0, 0, 4, 3) and not m(0, 0, 3, 2)
    assert not m(0, 0, 5, 4) and not m(0, 0, 1, 2)  # other row; future


def test_padded():
    b = prepack.collate(ROWS, "padded", max_seq_len=6, pad_id=50256, mask_4d=True)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 50256],
                                       [1, 2, 3, 4, 50256, 50256]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]
    assert b["labels"][1].tolist() == [2, 3, 4, -100, -100, -100]
    assert b["doc_ids"][0].tolist() == [0, 0, 0, 1, 1, -1]
    m = b["mask_4d"]
    assert m.shape == (2, 1, 6, 6)
    assert m[0, 0, 4].tolist() == [False, False, False, True, True, False]
    assert not m[0, 0, 5].any()


def test_bad_arguments():
    with pytest.raises(ValueError):
        prepack.collate(ROWS, "dense")
    with pytest.raises(ValueError):
        prepack.collate(ROWS, "padded", max_seq_len=3)


@pytest.mark.parametrize("form", ["varlen", "hf", "flex", "padded"])
def test_no_rows_is_an_empty_batch(form):
    """An empty batch in every form (as the C batcher gives), not an
    unrelated error."""
    batch = prepack.collate([], form, max_seq_len=8 if form == "padded" else None)
    assert all(len(v) == 0 or getattr(v, "shape", (1,))[0] in (0, 1)
               for v in batch.values() if hasattr(v, "__len__"))
    if form == "padded":
        assert batch["input_ids"].shape == (0, 8)
        assert prepack.collate([], "padded")["input_ids"].shape == (0, 0)


def reference_flat(rows):
    """Every flat field, token by token from the definitions: an
    independent reference for collate's vectorised one."""
    ids, pos, shifted, unshifted, doc = [], [], [], [], []
    d = 0
    for r in rows:
        cu = r["cu_seqlens"].tolist()
        mask = r.get("loss_mask")
        for j in range(len(cu) - 1):
            for t in range(cu[j], cu[j + 1]):
                trained = lambda u: mask is None or mask[u] == 1  # noqa: E731
                ids.append(int(r["input_ids"][t]))
                pos.append(t - cu[j])
                last = t + 1 == cu[j + 1]
                shifted.append(-100 if last or not trained(t + 1)
                               else int(r["input_ids"][t + 1]))
                unshifted.append(-100 if t == cu[j] or not trained(t)
                                 else int(r["input_ids"][t]))
                doc.append(d)
            d += 1
    return ids, pos, shifted, unshifted, doc


def test_flat_forms_match_a_per_token_reference():
    """Random rows (some with loss masks, one-token sequences, uint16 and
    uint32 ids): each flat form holds exactly the reference's fields."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        rows = []
        for _ in range(rng.integers(1, 6)):
            seqs = [rng.integers(0, 60000, rng.integers(1, 9)).tolist()
                    for _ in range(rng.integers(1, 5))]
            n = sum(map(len, seqs))
            r = row(seqs, mask=rng.integers(0, 2, n).tolist()
                    if rng.random() < 0.5 else None)
            if trial % 2:  # uint32 ids past uint16's range
                r["input_ids"] = r["input_ids"].astype(np.uint32) + 10000
            rows.append(r)
        ids, pos, shifted, unshifted, doc = reference_flat(rows)
        v = prepack.collate(rows, "varlen")
        assert v["input_ids"].tolist() == ids
        assert v["position_ids"].tolist() == pos
        assert v["labels"].tolist() == shifted
        assert v["max_seqlen"] == max(
            int(np.diff(r["cu_seqlens"]).max()) for r in rows)
        h = prepack.collate(rows, "hf", return_seq_idx=True)
        assert h["labels"][0].tolist() == unshifted
        assert h["position_ids"][0].tolist() == pos
        assert h["seq_idx"][0].tolist() == doc
        f = prepack.collate(rows, "flex")
        assert f["labels"].tolist() == shifted
        assert f["doc_ids"].tolist() == doc
        m = prepack.collate(rows, "megatron")
        assert m["loss_mask"][0].tolist() == [float(x != -100)
                                              for x in shifted]
