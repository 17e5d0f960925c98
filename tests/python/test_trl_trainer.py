"""An `hf` export trained by TRL's own SFTTrainer (the pinned trl and
transformers, requirements/test.txt): two steps of a tiny random
LlamaForCausalLM on CPU with the settings docs/EXPORT.md gives
(packing=False, padding_free=True, max_length=None), and the batches the
model received checked sequence by sequence against the export's rows.
With the defaults, SFTTrainer refuses the export (max_length); with
packing=True it repacks it, and the export's boundaries are gone."""
import json
import subprocess

import numpy as np
import pytest

import prepack

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

VOCAB = 64


def tiny_tokenizer():
    """A word-level tokenizer of VOCAB ids (no download): SFTTrainer wants
    a processing_class for its pad token; the export is already ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0",
                                   eos_token="t2", unk_token="t1")


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                         dtype=torch.float32)


@pytest.fixture(scope="module")
def export_dir(prepack_bin, tmp_path_factory):
    """Random sequences (ids 3..63, a loss mask) packed at L = 48 and
    exported as hf."""
    tmp = tmp_path_factory.mktemp("trl")
    rng = np.random.default_rng(3)
    src = tmp / "in.jsonl"
    with open(src, "w") as f:
        for n in rng.integers(2, 20, 24):
            ids = rng.integers(3, VOCAB, int(n)).tolist()
            mask = (rng.random(int(n)) < 0.8).astype(int).tolist()
            f.write(json.dumps({"input_ids": ids, "loss_mask": mask}) + "\n")
    s = tmp / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(s),
                    "--max-seq-len", "48", "--quiet"], check=True)
    out = tmp / "hf"
    prepack.export(str(s), "hf", str(out))
    return str(s), str(out)


def trainer(out_dir, dataset, **config):
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(output_dir=str(out_dir), per_device_train_batch_size=2,
                     max_steps=2, report_to=[], use_cpu=True,
                     save_strategy="no",
                     logging_strategy="no", learning_rate=1e-3,
                     dataloader_num_workers=0, **config)
    return SFTTrainer(model=tiny_llama(), args=args, train_dataset=dataset,
                      processing_class=tiny_tokenizer())


def test_sft_trainer_two_steps_on_an_hf_export(export_dir, tmp_path):
    from datasets import load_from_disk
    s, out = export_dir
    ds = load_from_disk(out)
    t = trainer(tmp_path / "run", ds, packing=False, padding_free=True,
                max_length=None, seed=0, data_seed=0)
    seen = []
    t.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(
            {k: kwargs[k].detach().clone() for k in
             ("input_ids", "position_ids", "labels")}), with_kwargs=True)
    result = t.train()
    assert result.global_step == 2 and len(seen) == 2
    assert np.isfinite(result.training_loss)
    # each batch is two of the export's rows, flattened: find them by
    # their tokens and hold every sequence to the row's
    shards = prepack.ShardSet(s)
    rows = {tuple(r["input_ids"].tolist()): r for r in shards}
    used = 0
    for batch in seen:
        ids = batch["input_ids"][0].tolist()
        pos = batch["position_ids"][0].tolist()
        labels = batch["labels"][0].tolist()
        assert batch["input_ids"].shape[0] == 1  # padding-free: one row
        at = 0
        while at < len(ids):
            match = [k for k in rows if tuple(ids[at:at + len(k)]) == k]
            assert match, f"tokens at {at} are no row of the export"
            row = rows[max(match, key=len)]
            n = len(row["input_ids"])
            want = prepack.collate([row], "hf")
            cu = row["cu_seqlens"].tolist()
            for j in range(len(cu) - 1):  # sequence by sequence
                a, b = at + cu[j], at + cu[j + 1]
                assert pos[a:b] == list(range(b - a)), (at, j)
                assert labels[a] == -100  # each sequence's first position
                assert labels[a:b] == \
                    want["labels"][0][cu[j]:cu[j + 1]].tolist()
            at += n
            used += 1
    assert used == 4


def test_sft_trainer_defaults_refuse_an_export(export_dir, tmp_path):
    """With SFTConfig's default max_length (1024) and padding_free=True,
    SFTTrainer raises: the settings docs/EXPORT.md gives are needed."""
    from datasets import load_from_disk
    _, out = export_dir
    with pytest.raises(ValueError, match="max_length"):
        trainer(tmp_path / "run", load_from_disk(out), packing=False,
                padding_free=True)


def test_sft_trainer_packing_true_loses_the_boundaries(export_dir, tmp_path):
    """Why docs/EXPORT.md says packing=False: with packing=True TRL packs
    the export's rows again as single sequences, and the positions the
    model receives restart once a row, not once a sequence."""
    from datasets import load_from_disk
    s, out = export_dir
    t = trainer(tmp_path / "run", load_from_disk(out), packing=True,
                max_length=48)
    seen = []
    t.model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["position_ids"].clone()),
        with_kwargs=True)
    t.train()
    restarts = sum(int((p == 0).sum()) for p in seen)
    shards = prepack.ShardSet(s)
    fewest = min(len(r["cu_seqlens"]) - 1 for r in shards)
    assert fewest > 1  # every row holds several sequences
    assert restarts <= 4  # at most the 2 x 2 rows trained: one restart each
