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

    def must_apply(joined, needs):
        flat = real(joined, needs)
        assert flat is not None, "the C path was not taken"
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
    # cu_seqlens past the tokens: C would index past the ids, numpy read
    # labels it never wrote
    "cu past the tokens": ([dict(row([[1, 2, 3]]),
                                 cu_seqlens=np.array([0, 3, 9], np.int32),
                                 seq_ids=np.arange(2, dtype=np.uint64))],
                           "not from 0 to the row's 3 tokens"),
    "cu short of the tokens": ([dict(row([[1, 2, 3]]),
                                     cu_seqlens=np.array([0, 2], np.int32))],
                               "not from 0 to the row's 3 tokens"),
    "cu not from 0": ([dict(row([[1, 2, 3]]),
                            cu_seqlens=np.array([1, 3], np.int32))],
                      "runs from 1 to 3"),
    "cu falling": ([dict(row([[1, 2, 3], [4]]),
                         cu_seqlens=np.array([0, 3, 2, 4], np.int32),
                         seq_ids=np.arange(3, dtype=np.uint64))],
                   "does not rise strictly"),
    "an empty sequence": ([dict(row([[1, 2, 3]]),
                                cu_seqlens=np.array([0, 0, 3], np.int32),
                                seq_ids=np.arange(2, dtype=np.uint64))],
                          "does not rise strictly"),
    "no sequence": ([dict(row([[1]]), input_ids=np.zeros(0, np.uint16),
                          cu_seqlens=np.zeros(1, np.int32),
                          seq_ids=np.zeros(0, np.uint64))],
                    "holds no sequence"),
    "too few seq_ids": ([dict(row([[1, 2], [3]]),
                              seq_ids=np.zeros(1, np.uint64))],
                        "1 seq_ids for 2 sequences"),
    "a short loss_mask": ([dict(row([[1, 2, 3]]),
                                loss_mask=np.ones(2, np.uint8))],
                          "loss_mask holds 2 values for 3 tokens"),
    "a 2-d loss_mask": ([dict(row([[1, 2]]),
                              loss_mask=np.ones((1, 2), np.uint8))],
                        "loss_mask has 2 dimensions"),
    "2-d ids": ([dict(row([[1, 2]]), input_ids=np.array([[1, 2]], np.uint16))],
                "input_ids has 2 dimensions"),
    "float cu_seqlens": ([dict(row([[1, 2]]),
                               cu_seqlens=np.array([0., 2.]))],
                         "cu_seqlens holds float64"),
    "no seq_ids": ([{"input_ids": np.ones(2, np.uint16),
                     "cu_seqlens": np.array([0, 2], np.int32)}],
                   "lacks seq_ids"),
    "the second row": ([row([[1, 2]]),
                        dict(row([[1, 2, 3]]),
                             cu_seqlens=np.array([0, 4], np.int32))],
                       "row 1 of the batch"),
}

# sound rows that only the numpy path takes
NUMPY_ROWS = {
    "widths mixed": [row([[1, 2]]),
                     dict(row([[3]]), input_ids=np.array([3], np.uint32))],
    "int64 ids": [dict(row([[1, 2, 3]]),
                       input_ids=np.array([1, 2, 3], np.int64))],
    "int64 seq_ids": [dict(row([[1, 2, 3]]),
                           seq_ids=np.zeros(1, np.int64))],
}


@pytest.mark.parametrize("case", sorted(BROKEN_ROWS))
@pytest.mark.parametrize("form", ["varlen", "hf", "flex", "padded"])
def test_rows_that_break_the_contract_are_refused(case, form, flat_path):
    """A row that breaks the row contract is a ValueError naming the row
    and what is wrong, in every form, through either path: never labels
    read from memory numpy did not write, never C indexing past an array
    by a cu_seqlens it was not checked against."""
    rows, words = BROKEN_ROWS[case]
    with pytest.raises(ValueError, match="row [01] of the batch") as e:
        prepack.collate(rows, form, max_seq_len=8 if form == "padded" else None)
    assert words in str(e.value)


@pytest.mark.parametrize("case", sorted(NUMPY_ROWS))
@pytest.mark.parametrize("form", ["varlen", "hf", "flex"])
def test_sound_rows_c_does_not_take_go_through_numpy(case, form):
    """Sound rows of other dtypes are batched by numpy, as they were, and
    give what the same rows as ShardSet's dtypes give."""
    from prepack import _collate
    rows = NUMPY_ROWS[case]
    assert _collate._joined(rows) is None
    typed = [row([r["input_ids"][a:b] for a, b in
                  zip(r["cu_seqlens"][:-1], r["cu_seqlens"][1:])],
                 mask=r.get("loss_mask")) for r in rows]
    for t, r in zip(typed, rows):
        t["seq_ids"] = np.asarray(r["seq_ids"], np.uint64)
    got, want = _outcome(rows, form), _outcome(typed, form)
    assert got.keys() == want.keys()
    for k in got:
        assert np.array_equal(np.asarray(got[k], dtype=object).astype(float),
                              np.asarray(want[k], dtype=object).astype(float)), k


def _mutated(rng, rows):
    """rows with one field of one row broken at random: lengths, values,
    dtypes and shapes a caller's rows could have."""
    rows = [dict(r) for r in rows]
    r = rows[rng.integers(len(rows))]
    key = ("input_ids", "cu_seqlens", "seq_ids", "loss_mask")[rng.integers(4)]
    a = np.asarray(r.get(key, np.ones(len(r["input_ids"]), np.uint8)))
    kind = rng.integers(6)
    if kind == 0 and len(a):  # one value changed, perhaps out of range
        a = a.copy()
        a[rng.integers(len(a))] = a.dtype.type(rng.integers(0, 2**15))
    elif kind == 1:  # one element more or fewer
        a = np.append(a, a[-1:]) if rng.random() < 0.5 else a[:-1]
    elif kind == 2:  # another dtype
        a = a.astype((np.int64, np.uint32, np.int16, np.float32,
                      np.dtype(">u2"))[rng.integers(5)])
    elif kind == 3:  # not contiguous
        a = np.repeat(a, 2)[::2]
    elif kind == 4:  # 2-d
        a = a[None]
    else:  # absent
        r.pop(key, None)
        return rows
    r[key] = a
    return rows


def test_randomly_broken_rows_match_the_numpy_path(monkeypatch):
    """Rows broken at random take the same course through collate with
    libprepack as through numpy alone: the same batch or the same error,
    and never a crash (the C functions would write past their arrays on
    a cu_seqlens that _joined let through)."""
    from prepack import _collate
    real = _collate._flat_c
    rng = np.random.default_rng(3)
    for _ in range(300):
        rows = [row([rng.integers(0, 60000, rng.integers(1, 6)).tolist()
                     for _ in range(rng.integers(1, 4))])
                for _ in range(rng.integers(1, 4))]
        rows = _mutated(rng, rows)
        for form in ("varlen", "hf"):
            monkeypatch.setattr(_collate, "_flat_c", real)
            with_c = _outcome(rows, form)
            monkeypatch.setattr(_collate, "_flat_c", lambda r, n: None)
            assert with_c == _outcome(rows, form), (rows, form)


@pytest.mark.parametrize("form", ["varlen", "hf", "flex", "padded"])
def test_sound_rows_of_other_shapes_are_batched(form):
    """Rows the contract allows though C does not take them: a read-only
    mapping rather than a dict, a loss_mask given as a list, uint64
    cu_seqlens; each gives the batch its plain twin gives."""
    import types
    plain = row([[5, 6, 7], [8, 9]], mask=[1, 1, 0, 0, 1])
    twins = [types.MappingProxyType(plain),
             dict(plain, loss_mask=[1, 1, 0, 0, 1]),
             dict(plain, cu_seqlens=plain["cu_seqlens"].astype(np.uint64)),
             types.MappingProxyType(dict(plain, seq_ids=[0, 1]))]
    want = _outcome([plain], form)
    assert isinstance(want, dict)
    for twin in twins:
        got = _outcome([twin], form)
        assert isinstance(got, dict), (twin, got)
        assert got.keys() == want.keys()
        for k in got:
            assert np.array_equal(got[k], want[k]), k
