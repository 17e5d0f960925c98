"""The exact shapes the consumers take (issue 29): NeMo's and
Megatron-Bridge's packing metadata units and --pad-multiple padding,
through a reader written from their GPTSFTPackedDataset.collate_fn;
Megatron-Core's THD batch (form="megatron") through megatron.core's own
get_thd_batch_on_this_cp_rank; the hf form's separator_id against
transformers' DataCollatorWithFlattening."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import prepack
from conftest import ROOT

ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))


def pack_jsonl(prepack_bin, tmp_path, seqs, L, *extra, masks=None):
    src = tmp_path / "in.jsonl"
    with open(src, "w") as f:
        for i, s in enumerate(seqs):
            rec = {"input_ids": [int(t) for t in s]}
            if masks is not None:
                rec["loss_mask"] = [int(x) for x in masks[i]]
            f.write(json.dumps(rec) + "\n")
    out = tmp_path / "set"
    p = subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                        "--max-seq-len", str(L), "--quiet", *extra],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return str(out)


def read_packs(out, to, L):
    """The packs as GPTSFTPackedDataset.__getitem__ reads them, and the
    metadata (a JSON list of one object)."""
    if to == "nemo-npy":
        data = np.load(os.path.join(out, f"training_{L}.npy"),
                       allow_pickle=True)
        packs = [dict(p) for p in data]
    else:
        import pyarrow.parquet as pq
        packs = pq.read_table(os.path.join(
            out, f"training_{L}.idx.parquet")).to_pylist()
    with open(os.path.join(out, f"{L}_metadata.jsonl")) as f:
        meta = json.load(f)
    return [{"input_ids": p["input_ids"],
             "seq_boundaries": list(p["seq_start_id"]) + [len(p["input_ids"])],
             "loss_mask": p["loss_mask"]} for p in packs], meta


def bridge_collate(items, meta, max_length, eos_id, pad_seq_to_mult=1):
    """Written from Megatron-Bridge's GPTSFTPackedDataset.collate_fn
    (src/megatron/bridge/data/datasets/sft.py), pad_to_max_length=True and
    pad_cu_seqlens=True, one row at a time: each sequence gives its
    boundary span minus one inputs; the row's cu_seqlens end at
    max_length (a last span for the row's padding); with pad_seq_to_mult
    > 1 those are cu_seqlens_padded and cu_seqlens holds the logical
    lengths (trailing untrained EOS stripped); max_seqlen is
    max(dataset_max_seqlen, max_length - min_packed_seqlen)."""
    out = []
    for item in items:
        b, ids = item["seq_boundaries"], item["input_ids"]
        mask = item["loss_mask"]
        spans = [b[i + 1] - b[i] - 1 for i in range(len(b) - 1)]
        inputs = np.concatenate([ids[b[i]:b[i + 1] - 1]
                                 for i in range(len(b) - 1)])
        labels = np.concatenate([ids[b[i] + 1:b[i + 1]]
                                 for i in range(len(b) - 1)])
        lmask = np.concatenate([mask[b[i]:b[i + 1] - 1]
                                for i in range(len(b) - 1)])
        assert len(inputs) <= max_length
        phys = list(np.concatenate([[0], np.cumsum(spans)]))
        logical = None
        if pad_seq_to_mult > 1:
            logical = [0]
            for i in range(len(b) - 1):
                seq = ids[b[i]:b[i + 1] - 1]
                lm = mask[b[i]:b[i + 1] - 1]
                n = len(seq)
                while n > 0 and seq[n - 1] == eos_id and not lm[n - 1]:
                    n -= 1
                logical.append(logical[-1] + n)
        if phys[-1] != max_length:
            phys.append(max_length)
            if logical is not None:
                logical.append(logical[-1])
        top = max(p["dataset_max_seqlen"] for p in meta)
        least = min(p["min_packed_seqlen"] for p in meta)
        out.append({"tokens": inputs, "labels": labels, "loss_mask": lmask,
                    "cu_seqlens_padded": phys,
                    "cu_seqlens": logical if logical is not None else phys,
                    "max_seqlen": max(top, max_length - least)})
    return out


@pytest.mark.parametrize("to", ["nemo-npy", "nemo-parquet"])
def test_nemo_metadata_in_their_units(prepack_bin, tmp_path, to):
    """100 sequences of 20 tokens at L = 256: 8 rows of 12 and one of 4.
    In their units (a sequence counts 19) the emptiest row holds 76
    inputs, so its padding is 180 long; raw counts (80) gave max_seqlen
    176 < 180, a span longer than the bound TE's kernels take."""
    L = 256
    seqs = [np.arange(3 + i, 23 + i) for i in range(100)]
    s = pack_jsonl(prepack_bin, tmp_path, seqs, L)
    out = tmp_path / "out"
    prepack.export(s, to, out)
    items, meta = read_packs(out, to, L)
    assert meta == [{"dataset_max_seqlen": 19, "max_samples_per_bin": 12,
                     "packing_factor": round(100 / 9, 2),
                     "packing_efficiency":
                         round((8 * 228 + 76) / 9 / L * 100, 2),
                     "pack_size": L, "min_packed_seqlen": 76}]
    gaps = []
    for batch in bridge_collate(items, meta, L, eos_id=-1):
        cu = batch["cu_seqlens"]
        spans = np.diff(cu)
        assert batch["max_seqlen"] >= spans.max(), (batch["max_seqlen"], spans)
        gaps.append(L - len(batch["tokens"]))
    assert max(gaps) == 180  # the underfull row's padding, within the bound
    # every sequence trains its own tokens, shifted within it
    got = sorted(tuple(b["tokens"][i:i + 19].tolist())
                 for b in bridge_collate(items, meta, L, -1)
                 for i in range(0, len(b["tokens"]), 19))
    assert got == sorted(tuple(q[:-1].tolist()) for q in seqs)


@pytest.mark.parametrize("to", ["nemo-npy", "nemo-parquet"])
def test_nemo_pad_multiple_boundaries(prepack_bin, tmp_path, to):
    """A set packed with --pad-multiple 8, exported with --pad-id EOS:
    through Megatron-Bridge's collate with pad_seq_to_mult=8 every
    physical boundary (cu_seqlens_padded) is a multiple of 8, the logical
    ones are the set's sequences' lengths, each sequence's inputs,
    targets and loss mask are the set's, the padding is never trained, and
    the metadata bounds every span."""
    L, M, EOS = 64, 8, 2
    rng = np.random.default_rng(7)
    seqs = [rng.integers(3, 500, int(n)) for n in rng.integers(2, 40, 60)]
    masks = [(rng.random(len(q)) < 0.7).astype(int) for q in seqs]
    s = pack_jsonl(prepack_bin, tmp_path, seqs, L, "--pad-multiple", str(M),
                   masks=masks)
    with pytest.raises(ValueError, match="--pad-id EOS"):
        prepack.export(s, to, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="pad_id applies"):
        prepack.export(s, "hf-parquet", tmp_path / "refused", pad_id=EOS)
    out = tmp_path / "out"
    prepack.export(s, to, out, pad_id=EOS)
    items, meta = read_packs(out, to, L)
    batches = bridge_collate(items, meta, L, EOS, pad_seq_to_mult=M)
    shards = prepack.ShardSet(s)
    assert len(batches) == len(shards)
    for r, (row, b) in enumerate(zip(shards, batches)):
        pcu = np.asarray(b["cu_seqlens_padded"])
        cu = np.asarray(b["cu_seqlens"])
        assert (pcu % M == 0).all(), (r, pcu)
        assert max(np.diff(pcu)) <= b["max_seqlen"]
        real = np.diff(row["cu_seqlens"])
        assert np.diff(cu)[:len(real)].tolist() == real.tolist(), r
        want = prepack.collate([row], "varlen")
        for j, n in enumerate(real):
            lo, c = int(pcu[j]), int(row["cu_seqlens"][j])
            # inputs: the sequence's tokens, then EOS padding
            assert b["tokens"][lo:lo + n].tolist() == \
                row["input_ids"][c:c + n].tolist(), (r, j)
            assert set(b["tokens"][lo + n:pcu[j + 1]].tolist()) <= {EOS}
            # targets where trained: the set's shifted labels
            trained = b["loss_mask"][lo:lo + n].astype(bool)
            got = np.where(trained, b["labels"][lo:lo + n], -100)
            assert got.tolist() == want["labels"][c:c + n].tolist(), (r, j)
            assert not b["loss_mask"][lo + n:pcu[j + 1]].any()


def test_export_pad_id_on_both_commands(prepack_bin, tmp_path):
    """--pad-id is an option of `prepack export` and `python -m prepack
    export`; without it a --pad-multiple set's nemo export is one line
    naming it, exit 1, nothing written."""
    seqs = [np.arange(3, 3 + n) for n in (5, 9, 13, 20)]
    s = pack_jsonl(prepack_bin, tmp_path, seqs, 32, "--pad-multiple", "4")
    for cmd in ([prepack_bin], [sys.executable, "-m", "prepack"]):
        env = dict(ENV, PREPACK_PYTHON=sys.executable)
        name = "c" if len(cmd) == 1 else "py"
        p = subprocess.run(cmd + ["export", s, "--to", "nemo-npy", "-o",
                                  str(tmp_path / f"no-{name}")],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 1 and "--pad-id EOS" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert not (tmp_path / f"no-{name}").exists()
        p = subprocess.run(cmd + ["export", s, "--to", "nemo-npy", "-o",
                                  str(tmp_path / name), "--pad-id", "2"],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        items, _ = read_packs(tmp_path / name, "nemo-npy", 32)
        spans = [np.diff(i["seq_boundaries"]) - 1 for i in items]
        assert all((x % 4 == 0).all() for x in spans)


# ---- the hf form's separator_id ---------------------------------------------

@pytest.mark.parametrize("separator", [-100, 0, 7, 31999])
def test_separator_id_equals_data_collator_with_flattening(shard_set,
                                                          separator):
    """collate(rows, "hf", separator_id=S) and PackedDataset's: the labels
    transformers' DataCollatorWithFlattening(separator_id=S) gives for
    the same sequences (with their loss masks as labels)."""
    torch = pytest.importorskip("torch")
    from transformers import DataCollatorWithFlattening
    collator = DataCollatorWithFlattening(separator_id=separator)
    s = prepack.ShardSet(shard_set)
    for first in (0, 50):
        rows = [s[i] for i in range(first, first + 3)]
        features = []
        for r in rows:
            cu = r["cu_seqlens"]
            for j in range(len(cu) - 1):
                ids = r["input_ids"][cu[j]:cu[j + 1]].astype(np.int64)
                m = r["loss_mask"][cu[j]:cu[j + 1]] if "loss_mask" in r \
                    else np.ones(len(ids), np.uint8)
                features.append({"input_ids": ids.tolist(), "labels":
                                 np.where(m == 1, ids, -100).tolist()})
        want = collator(features, return_tensors="pt")
        for got in (prepack.collate(rows, "hf", tensors="pt",
                                    separator_id=separator),
                    s.batch(range(first, first + 3), "hf", tensors="pt",
                            separator_id=separator)):
            assert torch.equal(got["labels"], want["labels"])
            assert torch.equal(got["input_ids"], want["input_ids"])
    from prepack.torch import PackedDataset
    ds = PackedDataset(shard_set, batch_rows=3, form="hf", shuffle=False,
                       separator_id=separator)
    want = prepack.collate([s[i] for i in range(3)], "hf", tensors="pt",
                           separator_id=separator)
    assert torch.equal(next(iter(ds))["labels"], want["labels"])
    with pytest.raises(ValueError, match="separator_id"):
        prepack.collate(rows, "varlen", separator_id=0)


# ---- Megatron-Core's THD batch ----------------------------------------------

def test_megatron_form_through_megatron_core(shard_set):
    """form="megatron" (collate, ShardSet.batch, PackedDataset) is what
    Megatron-Core's get_thd_batch_on_this_cp_rank takes: it builds
    PackedSeqParams (thd) from cu_seqlens, cu_seqlens_padded and the
    max_seqlen tensor; each sequence's tokens are the row's, its labels
    the next token of the same sequence where loss_mask is 1, its
    positions restart at 0; loss_mask is the varlen form's trained
    labels."""
    torch = pytest.importorskip("torch")
    from megatron.core.utils import get_thd_batch_on_this_cp_rank
    from prepack.torch import PackedDataset
    s = prepack.ShardSet(shard_set)
    pick = [3, 9, 27]
    rows = [s[i] for i in pick]
    varlen = prepack.collate(rows, "varlen")
    for m in (1, 8):
        ds = PackedDataset(shard_set, batch_rows=3, form="megatron",
                           shuffle=False, pad_multiple=m)
        first = next(iter(ds))
        assert first["tokens"].shape[0] == 1
        got_ds = prepack.collate([s[i] for i in range(3)], "megatron",
                                 tensors="pt", pad_multiple=m)
        for k in ("tokens", "labels", "loss_mask", "cu_seqlens_padded"):
            assert torch.equal(first[k], got_ds[k]), k
        for batch in (prepack.collate(rows, "megatron", tensors="pt",
                                      pad_multiple=m),
                      s.batch(pick, "megatron", tensors="pt",
                              pad_multiple=m)):
            assert batch["max_seqlen"].dtype == torch.int32
            assert batch["cu_seqlens"].dtype == torch.int32
            assert batch["loss_mask"].dtype == torch.float32
            keys = {k: batch[k] for k in ("tokens", "labels", "loss_mask",
                                          "position_ids")}
            out, params = get_thd_batch_on_this_cp_rank(
                dict(keys), batch["cu_seqlens"], batch["cu_seqlens_padded"],
                batch["max_seqlen"], cp_size=1, cp_rank=0)
            assert params.qkv_format == "thd"
            assert torch.equal(params.cu_seqlens_q, batch["cu_seqlens"])
            cu = params.cu_seqlens_q.tolist()
            pcu = params.cu_seqlens_q_padded.tolist()
            assert params.max_seqlen_q == max(np.diff(pcu))
            assert pcu[-1] == out["tokens"].shape[1]
            assert all(p % m == 0 for p in pcu)
            tokens, labels = out["tokens"][0], out["labels"][0]
            mask, pos = out["loss_mask"][0], out["position_ids"][0]
            for j in range(len(cu) - 1):
                n, lo = cu[j + 1] - cu[j], pcu[j]
                c = int(varlen["cu_seqlens"][j])
                assert tokens[lo:lo + n].tolist() == \
                    varlen["input_ids"][c:c + n].tolist()
                assert pos[lo:lo + n].tolist() == list(range(n))
                want = varlen["labels"][c:c + n]
                assert (mask[lo:lo + n] == 1).tolist() == \
                    (want != -100).tolist()
                trained = mask[lo:lo + n] == 1
                assert labels[lo:lo + n][trained].tolist() == \
                    want[want != -100].tolist()
                assert not mask[lo + n:pcu[j + 1]].any()  # CP padding
                # nothing follows a sequence's last token: pad_id, untrained
                assert labels[pcu[j + 1] - 1] == 0 and not mask[pcu[j + 1] - 1]
            assert (labels >= 0).all()  # a token everywhere, never -100
            assert batch["num_loss_tokens"] == int(mask.sum())
            if m > 1:  # each CP rank's share, as for the varlen form
                part = prepack.cp_split(batch, 1, 2)
                want = prepack.cp_split(prepack.collate(
                    rows, "varlen", tensors="pt", pad_multiple=m), 1, 2)
                assert torch.equal(part["tokens"][0], want["input_ids"])
