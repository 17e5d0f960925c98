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
                trained = lambda u: mask is None or mask[u] != 0  # noqa: E731
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


@pytest.fixture(params=["c", "numpy"])
def flat_path(request, monkeypatch):
    """collate's flat arrays through libprepack's row functions (every
    call must take that path) or through numpy alone."""
    from prepack import _collate, _native
    if request.param == "numpy":
        monkeypatch.setattr(_collate, "_flat_c", lambda rows, needs: None)
        return request.param
    if _native.loaded() is None:
        pytest.skip("libprepack does not load here")
    real = _collate._flat_c

    def must_apply(rows, needs):
        flat = real(rows, needs)
        assert flat is not None or not rows, "the C path was not taken"
        return flat
    monkeypatch.setattr(_collate, "_flat_c", must_apply)
    return request.param


def test_flat_forms_match_a_per_token_reference(flat_path):
    """Random rows (some with loss masks, values past 1 among them,
    one-token sequences, uint16 and uint32 ids): each flat form holds
    exactly the reference's fields, through C and through numpy."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        rows = []
        for _ in range(rng.integers(1, 6)):
            seqs = [rng.integers(0, 60000, rng.integers(1, 9)).tolist()
                    for _ in range(rng.integers(1, 5))]
            n = sum(map(len, seqs))
            r = row(seqs, mask=rng.integers(0, 3, n).tolist()
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
        trains = sum(x != -100 for x in shifted)
        assert v["num_loss_tokens"] == trains
        h = prepack.collate(rows, "hf", return_seq_idx=True,
                            num_items_in_batch=True)
        assert h["num_items_in_batch"] == trains
        assert h["labels"][0].tolist() == unshifted
        assert h["position_ids"][0].tolist() == pos
        assert h["seq_idx"][0].tolist() == doc
        f = prepack.collate(rows, "flex")
        assert f["labels"].tolist() == shifted
        assert f["doc_ids"].tolist() == doc
        assert f["num_loss_tokens"] == trains
        m = prepack.collate(rows, "megatron")
        assert m["num_loss_tokens"] == trains
        assert m["loss_mask"][0].tolist() == [float(x != -100)
                                              for x in shifted]


def test_flat_fields_beyond_the_tokens(flat_path):
    """cu_seqlens, seq_ids and num_loss_tokens over the batch, both paths."""
    rows = ROWS + [row([[3], [4, 5]], mask=[0, 2, 1])]
    v = prepack.collate(rows, "varlen")
    assert v["cu_seqlens"].tolist() == [0, 3, 5, 9, 10, 12]
    assert v["seq_ids"].tolist() == [0, 1, 0, 0, 1]
    assert v["seq_ids"].dtype == np.uint64
    assert v["num_loss_tokens"] == int((v["labels"] != -100).sum()) == 6


def _outcome(rows, form):
    """collate's result as lists, or the class of what it raised."""
    try:
        b = prepack.collate(rows, form)
    except Exception as e:  # noqa: BLE001 - the class is the outcome
        return type(e)
    return {k: v.tolist() if hasattr(v, "tolist") else v
            for k, v in b.items() if k != "mask_mod"}


BROKEN_ROWS = {
    # cu_seqlens past the tokens: C would index past the ids
    "cu past the tokens": [dict(row([[1, 2, 3]]),
                                cu_seqlens=np.array([0, 3, 9], np.int32),
                                seq_ids=np.arange(2, dtype=np.uint64))],
    "cu short of the tokens": [dict(row([[1, 2, 3]]),
                                    cu_seqlens=np.array([0, 2], np.int32))],
    "cu not from 0": [dict(row([[1, 2, 3]]),
                           cu_seqlens=np.array([1, 3], np.int32))],
    "cu falling": [dict(row([[1, 2, 3], [4]]),
                        cu_seqlens=np.array([0, 3, 2, 4], np.int32),
                        seq_ids=np.arange(3, dtype=np.uint64))],
    "an empty sequence": [dict(row([[1, 2, 3]]),
                               cu_seqlens=np.array([0, 0, 3], np.int32),
                               seq_ids=np.arange(2, dtype=np.uint64))],
    "too few seq_ids": [dict(row([[1, 2], [3]]),
                             seq_ids=np.zeros(1, np.uint64))],
    "a short loss_mask": [dict(row([[1, 2, 3]]),
                               loss_mask=np.ones(2, np.uint8))],
    "a 2-d loss_mask": [dict(row([[1, 2]]),
                             loss_mask=np.ones((1, 2), np.uint8))],
    "widths mixed": [row([[1, 2]]),
                     dict(row([[3]]), input_ids=np.array([3], np.uint32))],
    "int64 ids": [dict(row([[1, 2, 3]]),
                       input_ids=np.array([1, 2, 3], np.int64))],
    "int64 seq_ids": [dict(row([[1, 2, 3]]),
                           seq_ids=np.zeros(1, np.int64))],
    "2-d ids": [dict(row([[1, 2]]), input_ids=np.array([[1, 2]], np.uint16))],
}


@pytest.mark.parametrize("case", sorted(BROKEN_ROWS))
@pytest.mark.parametrize("form", ["varlen", "hf", "flex"])
def test_rows_the_c_path_refuses_go_through_numpy(case, form, monkeypatch):
    """Rows that break the row contract never reach libprepack (which
    indexes by cu_seqlens): collate does with them exactly what its numpy
    path does, result or error, and does not crash."""
    from prepack import _collate
    rows = BROKEN_ROWS[case]
    assert _collate._joined(rows) is None
    with_c = _outcome(rows, form)
    monkeypatch.setattr(_collate, "_flat_c", lambda rows, needs: None)
    assert with_c == _outcome(rows, form)
