"""prepack.text against the installed TRL: for the same examples and the
same tokenizer, every record's input_ids and loss mask equal what TRL's
SFTTrainer._prepare_dataset makes of them (its labels: the token where
trained, -100 elsewhere), for the four shapes and both loss options. And
each kind of bad record refused naming the record and the field.

The tokenizer is made here, offline: a byte-level BPE trained with the
`tokenizers` library on the Python documentation's licence text (shipped
in fixtures/corpus), with a ChatML template that marks the assistant's
turns with {% generation %}."""
import os
import types

import pytest

from conftest import ROOT
from text_support import CHATML, rows_by_sequence, run_as_printed

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
trl_sft = pytest.importorskip("trl.trainer.sft_trainer")
datasets = pytest.importorskip("datasets")

import prepack  # noqa: E402
from prepack import text as ptext  # noqa: E402


def lib_or_skip():
    """Packing needs libprepack, which a sanitizer build's Python cannot
    load (its tokenizing tests run there all the same)."""
    if not os.environ.get("PREPACK_LIBRARY") and \
            not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


PLAIN = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
         "{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import trainers
    licence = os.path.join(ROOT, "fixtures", "corpus",
                           "LICENSE-python-docs.txt")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk.train([licence], trainers.BpeTrainer(
        vocab_size=600, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", bos_token=None,
        pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    d = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(d)
    return str(d)


TEXT = [{"text": "The Python Software Foundation is a non-profit."},
        {"text": "Licence terms.<|im_end|>"}]
PROMPT_COMPLETION = [
    {"prompt": "Who holds the copyright?", "completion": " The PSF."},
    {"prompt": "Is it free", "completion": "? Yes, under the licence."}]
MESSAGES = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is Python?"},
                  {"role": "assistant", "content": "A language."},
                  {"role": "user", "content": "Licence?"},
                  {"role": "assistant", "content": "PSF licence."}]},
    {"messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello there."}]}]
CONV_PROMPT_COMPLETION = [
    {"prompt": [{"role": "user", "content": "What is Python?"}],
     "completion": [{"role": "assistant", "content": "A language."}]},
    {"prompt": [{"role": "system", "content": "Terse."},
                {"role": "user", "content": "Licence?"}],
     "completion": [{"role": "assistant", "content": "PSF."}]}]


def trl_prepared(tok, examples, assistant_only_loss, completion_only_loss,
                 tmp_path, chat_template=None):
    """TRL's own preparation of the examples: (input_ids, labels) each;
    chat_template the training template SFTTrainer swaps in, if any."""
    args = trl_sft.SFTConfig(output_dir=str(tmp_path / "trl"),
                             assistant_only_loss=assistant_only_loss,
                             completion_only_loss=completion_only_loss,
                             max_length=None, dataset_num_proc=None,
                             report_to=[], bf16=False, use_cpu=True)
    trainer = types.SimpleNamespace(_tokenizer=tok,
                                    chat_template=chat_template,
                                    completion_only_loss=completion_only_loss)
    ds = trl_sft.SFTTrainer._prepare_dataset(
        trainer, datasets.Dataset.from_list(examples), tok, args,
        packing=False, formatting_func=None, dataset_name="test")
    return [(r["input_ids"], r["labels"]) for r in ds]


def ours(tok, examples, **options):
    """The examples as one batch (Tokenize.many, as packing reads them),
    each record's (input_ids, labels)."""
    encode = ptext.Tokenize(tok, **options)
    out = []
    for ids, mask in encode.many(examples, [f"record {i}" for i in
                                            range(len(examples))]):
        labels = ids if mask is None else \
            [t if m else -100 for t, m in zip(ids, mask)]
        out.append((ids, labels))
    return out


@pytest.mark.parametrize("examples", [TEXT, PROMPT_COMPLETION, MESSAGES,
                                      CONV_PROMPT_COMPLETION],
                         ids=["text", "prompt-completion", "messages",
                              "conversational prompt-completion"])
@pytest.mark.parametrize("assistant_only_loss", [False, True])
@pytest.mark.parametrize("completion_only_loss", [False, True])
def test_equal_to_trls_preparation(tokenizer_dir, tmp_path, examples,
                                   assistant_only_loss, completion_only_loss):
    tok = ptext.load_tokenizer(tokenizer_dir)
    conversational = "messages" in examples[0] or \
        isinstance(examples[0].get("prompt"), list)
    if assistant_only_loss and not conversational:
        pytest.skip("assistant_only_loss is for conversations")
    want = trl_prepared(tok, examples, assistant_only_loss,
                        completion_only_loss, tmp_path)
    got = ours(tok, examples, assistant_only_loss=assistant_only_loss,
               completion_only_loss=completion_only_loss)
    assert got == want
    # the masks are not trivial where a rule applies
    if assistant_only_loss or (completion_only_loss and
                               "prompt" in examples[0]):
        assert all(-100 in labels for _, labels in got)


def test_assistant_mask_is_transformers(tokenizer_dir):
    """Conversations: the same ids and mask as apply_chat_template's
    return_assistant_tokens_mask."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    for e in MESSAGES:
        want = tok.apply_chat_template(e["messages"], tokenize=True,
                                       return_dict=True,
                                       return_assistant_tokens_mask=True)
        ids, mask = ptext.Tokenize(tok, assistant_only_loss=True)(e, "r")
        assert ids == list(want["input_ids"])
        assert mask == list(want["assistant_masks"])


def test_chat_template_from_a_file(tokenizer_dir, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text(PLAIN)
    tok = ptext.load_tokenizer(tokenizer_dir, chat_template=plain)
    ids, mask = ptext.Tokenize(tok)(MESSAGES[1], "r")
    assert mask is None
    assert tok.decode(ids) == "user: Hi\nassistant: Hello there.\n"
    with pytest.raises(ptext.TextError, match=r"r: the tokenizer's chat "
                       r"template has no \{% generation %\} block"):
        ptext.Tokenize(tok, assistant_only_loss=True)(MESSAGES[1], "r")


BAD = [
    ({"txt": "x"}, "none of the fields 'text'"),
    ({"text": 7}, "text is int, not a string"),
    ({"prompt": "a"}, "a 'prompt' without a 'completion'"),
    ({"prompt": "a", "completion": None}, "completion is NoneType"),
    ({"messages": "hi"}, "messages is not a non-empty list"),
    ({"messages": []}, "messages is not a non-empty list"),
    ({"messages": ["hi"]}, r"messages\[0\] is not an object"),
    ({"messages": [{"role": "wizard", "content": "x"}]},
     r"messages\[0\].role is 'wizard'"),
    ({"messages": [{"role": "user", "content": 3}]},
     r"messages\[0\].content is not a string"),
    ({"prompt": [{"role": "user", "content": "x"}], "completion": "y"},
     "completion is not a non-empty list"),
    ("a string", "not an object"),
]


@pytest.mark.parametrize("record,message", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_bad_records_are_named(tokenizer_dir, record, message):
    tok = ptext.load_tokenizer(tokenizer_dir)
    with pytest.raises(ptext.TextError, match=r"^data.jsonl:3: " + message):
        ptext.Tokenize(tok)(record, "data.jsonl:3")


NOTHING_TO_TRAIN = [
    ({"messages": [{"role": "user", "content": "x"}]},
     {"assistant_only_loss": True}, "messages"),
    ({"prompt": [{"role": "user", "content": "x"}],
      "completion": [{"role": "user", "content": "y"}]},
     {"assistant_only_loss": True}, r"prompt \+ completion"),
    ({"prompt": "The licence", "completion": ""}, {"add_eos": False},
     "completion")]


@pytest.mark.parametrize("record,options,field", NOTHING_TO_TRAIN,
                         ids=["messages", "conversational pair", "pair"])
def test_nothing_to_train_is_refused_or_dropped(tokenizer_dir, record,
                                                options, field):
    """A record whose loss mask is all zeros, in each shape that can have
    one: refused naming it by default; with untrained="drop", None in
    its place, left out of Flat and counted, in and out of processes."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    with pytest.raises(ptext.TextError, match=f"^record 4: {field} has no "
                       f"token to train"):
        ptext.Tokenize(tok, **options)(record, "record 4")
    encode = ptext.Tokenize(tok, untrained="drop", **options)
    records = [TEXT[0], record, TEXT[1], record, TEXT[0]]
    wheres = [f"r{i}" for i in range(5)]
    got = encode.many(records, wheres)
    assert got[1] is None and got[3] is None
    assert got[0] == encode(TEXT[0], "r0") and got[2] is not None
    flat = ptext.Flat.of(got)
    assert flat.dropped == [1, 3] and len(flat.offsets) == 4
    pool = ptext.TokenizePool(encode, workers=2, chunk=2, least=1)
    try:
        pooled = pool.flat(records, wheres)
    finally:
        pool.close()
    _same_flat(pooled, flat)
    assert pooled.dropped == [1, 3]
    with pytest.raises(ValueError, match="untrained is 'skip'"):
        ptext.Tokenize(tok, untrained="skip")


def test_pack_dataset_drops_untrained_with_its_group(tmp_path):
    """pack_dataset(untrained="drop"): the records left out are counted
    in the figures, and the group column stays with the records kept."""
    lib_or_skip()
    import json
    import pyarrow as pa
    here = os.path.join(ROOT, "fixtures", "text")
    none = [{"role": "user", "content": "x"}]
    some = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "the licence"}]
    table = pa.table({"messages": [some, none, some, some, none, some],
                      "group": [1, 1, 2, 2, 3, 3]})
    options = dict(tokenizer=os.path.join(here, "tokenizer"),
                   assistant_only_loss=True)
    from prepack.dataset import DatasetError
    with pytest.raises(DatasetError, match="table: batch 0, row 1: "
                       "messages has no token to train"):
        prepack.pack_dataset(table, str(tmp_path / "x"), 256, **options)
    stats = prepack.pack_dataset(table, str(tmp_path / "s"), 256,
                                 untrained="drop", **options)
    assert stats["untrained_dropped"] == 2 and stats["sequences"] == 4
    # the same rows as the table without those records
    kept = table.take([0, 2, 3, 5])
    want = prepack.pack_dataset(kept, str(tmp_path / "w"), 256, **options)
    assert want["untrained_dropped"] == 0 and want["rows"] == stats["rows"]
    lines = tmp_path / "t.jsonl"  # JSON lines: records, not an Arrow batch
    lines.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    from_lines = prepack.pack_dataset([str(lines)], str(tmp_path / "j"), 256,
                                      untrained="drop", **options)
    assert from_lines["untrained_dropped"] == 2
    for d in "sj":
        got, wanted = (prepack.ShardSet(str(tmp_path / x)) for x in (d, "w"))
        for a, b in zip(got, wanted):
            assert a.keys() == b.keys()
            for k in a:
                assert str(a[k]) == str(b[k]), k


def test_a_template_that_fails_is_named(tokenizer_dir, tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ messages[0]['content'] | no_such_filter }}")
    tok = ptext.load_tokenizer(tokenizer_dir, chat_template=broken)
    with pytest.raises(ptext.TextError, match="r: the tokenizer's chat "
                       "template fails to render messages"):
        ptext.Tokenize(tok)(MESSAGES[1], "r")


def test_missing_tokenizer_and_template_are_named(tokenizer_dir, tmp_path):
    with pytest.raises(ptext.TextError, match="nowhere: no such tokenizer"):
        ptext.load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(ptext.TextError, match="none.jinja: cannot read"):
        ptext.load_tokenizer(tokenizer_dir, chat_template=tmp_path /
                             "none.jinja")


# ---- pack_dataset(tokenizer=...): text in, a verified set out -------------


@pytest.mark.parametrize("examples,options", [
    (TEXT, {}), (PROMPT_COMPLETION, {}),
    (MESSAGES, {"assistant_only_loss": True}),
    (CONV_PROMPT_COMPLETION, {"assistant_only_loss": True})],
    ids=["text", "prompt-completion", "messages",
         "conversational prompt-completion"])
def test_pack_dataset_tokenizes_parquet(tokenizer_dir, tmp_path, examples,
                                        options, prepack_bin):
    lib_or_skip()
    import subprocess
    import pyarrow as pa
    import pyarrow.parquet as pq
    from prepack import pack_dataset
    pa_path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(examples * 3), pa_path)
    out = tmp_path / "set"
    stats = pack_dataset([str(pa_path)], out, 128, tokenizer=tokenizer_dir,
                         **options)
    tok = ptext.load_tokenizer(tokenizer_dir)
    encode = ptext.Tokenize(tok, **options)
    want = {}
    for i, e in enumerate(examples * 3):
        ids, mask = encode(e, "r")
        want[i] = (ids, mask if mask is not None else [1] * len(ids))
    assert rows_by_sequence(out) == want
    assert stats["sequences"] == len(want)
    p = subprocess.run([prepack_bin, "verify", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_stats_and_datasets_source(tokenizer_dir):
    lib_or_skip()
    from prepack.dataset import stats_dataset
    ds = datasets.Dataset.from_list(MESSAGES * 4)
    s = stats_dataset(ds, 256, tokenizer=tokenizer_dir)
    tok = ptext.load_tokenizer(tokenizer_dir)
    tokens = sum(len(ptext.Tokenize(tok)(e, "r")[0]) for e in MESSAGES) * 4
    assert s["sequences"] == 8 and s["input_tokens"] == tokens
    assert s["untrained_dropped"] == 0
    # an IterableDataset (streamed; its columns known only as it is read)
    it = stats_dataset(ds.to_iterable_dataset(), 256,
                       tokenizer=tokenizer_dir)
    assert it == s


def test_pack_dataset_names_a_bad_record(tokenizer_dir, tmp_path):
    lib_or_skip()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from prepack.dataset import DatasetError, pack_dataset
    path = tmp_path / "chat.parquet"
    rows = MESSAGES + [{"messages": [{"role": "wizard", "content": "x"}]}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DatasetError, match=r"chat.parquet: row group 0, "
                       r"row 2: messages\[0\].role is 'wizard'"):
        pack_dataset([str(path)], tmp_path / "set", 128,
                     tokenizer=tokenizer_dir)
    assert not (tmp_path / "set").exists()
    with pytest.raises(DatasetError, match="nowhere: no such tokenizer"):
        pack_dataset([str(path)], tmp_path / "set", 128,
                     tokenizer=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"no column 'text' or 'prompt' "
                       r"or 'messages'"):
        pq.write_table(pa.Table.from_pylist([{"body": "x"}]), path)
        pack_dataset([str(path)], tmp_path / "set", 128,
                     tokenizer=tokenizer_dir)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst", ".jsonl.gz"])
def test_pack_dataset_reads_json_lines(tokenizer_dir, tmp_path, suffix):
    """Conversations as JSON lines (plain, zstd, gzip; a blank line
    skipped), packed as the same records from Parquet are."""
    lib_or_skip()
    import gzip
    import json
    import zstandard
    from prepack.dataset import pack_dataset
    records = (MESSAGES + PROMPT_COMPLETION) * 2
    text = "\n".join(json.dumps(r) for r in records[:3]) + "\n\n" + \
        "\n".join(json.dumps(r) for r in records[3:]) + "\n"
    path = tmp_path / f"chat{suffix}"
    data = text.encode()
    if suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif suffix.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    out = tmp_path / "set"
    pack_dataset([str(path)], out, 128, tokenizer=tokenizer_dir,
                 read_rows=3)
    encode = ptext.Tokenize(ptext.load_tokenizer(tokenizer_dir))
    want = {}
    for i, e in enumerate(records):
        ids, mask = encode(e, "r")
        want[i] = (ids, mask if mask is not None else [1] * len(ids))
    assert rows_by_sequence(out) == want


@pytest.mark.parametrize("lines,message", [
    (['{"text": "a"}', '{"text": '], r"chat.jsonl:2: invalid JSON"),
    (['{"text": "a"}', '', '[1, 2]'], r"chat.jsonl:3: not a JSON object"),
    (['{"text": "a"}', '{"messages": "x"}'],
     r"chat.jsonl:2: messages is not a non-empty list"),
    (['{"text": "a"}', '{"body": "x"}'],
     r"chat.jsonl:2: none of the fields 'text'")])
def test_json_lines_errors_name_the_line(tokenizer_dir, tmp_path, lines,
                                         message):
    lib_or_skip()
    from prepack.dataset import DatasetError, pack_dataset
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        pack_dataset([str(path)], tmp_path / "set", 64,
                     tokenizer=tokenizer_dir)
    assert not (tmp_path / "set").exists()


def test_json_lines_not_utf8_or_damaged(tokenizer_dir, tmp_path):
    lib_or_skip()
    from prepack.dataset import DatasetError, pack_dataset
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"chat.jsonl:2: not UTF-8"):
        pack_dataset([str(path)], tmp_path / "set", 64,
                     tokenizer=tokenizer_dir)
    zst = tmp_path / "chat.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(DatasetError, match=r"chat.jsonl.zst:1: cannot "
                       r"decompress"):
        pack_dataset([str(zst)], tmp_path / "set", 64,
                     tokenizer=tokenizer_dir)
    with pytest.raises(DatasetError, match=r"JSON lines of token ids"):
        pack_dataset([str(path)], tmp_path / "set", 64)


def test_the_command_says_what_to_run_and_it_packs(tokenizer_dir, tmp_path,
                                                   prepack_bin):
    """`prepack pack --tokenizer` exits 2 printing the python -m prepack
    command; run as printed, it packs the conversations into a set that
    `prepack verify` passes, with the assistant's tokens alone trained."""
    lib_or_skip()
    import json
    chat = tmp_path / "chat's.jsonl"  # a quote to survive the quoting
    chat.write_text("".join(json.dumps(r) + "\n" for r in MESSAGES * 5))
    out = tmp_path / "set"
    args = ["pack", str(chat), "-o", str(out), "--max-seq-len", "128",
            "--tokenizer", tokenizer_dir, "--assistant-only-loss"]
    run_as_printed(prepack_bin, args, out)
    encode = ptext.Tokenize(ptext.load_tokenizer(tokenizer_dir),
                            assistant_only_loss=True)
    want = {i: encode(e, "r") for i, e in enumerate(MESSAGES * 5)}
    assert rows_by_sequence(out) == {i: (ids, mask)
                                      for i, (ids, mask) in want.items()}


def test_text_options_need_a_tokenizer(tmp_path):
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    p = subprocess.run([sys.executable, "-m", "prepack", "pack", "x.jsonl",
                        "-o", str(tmp_path / "s"), "--max-seq-len", "8",
                        "--assistant-only-loss"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 2 and "the text options need --tokenizer" in \
        p.stderr, p.stderr


def test_the_bundled_conversations_and_tokenizer(tmp_path):
    """fixtures/text (make chat-demo's data): the shipped tokenizer loads
    from disk, its template marks the assistant's turns, and the first
    conversations prepare as TRL prepares them."""
    import json
    here = os.path.join(ROOT, "fixtures", "text")
    tok = ptext.load_tokenizer(os.path.join(here, "tokenizer"))
    with open(os.path.join(here, "conversations.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 200
    want = trl_prepared(tok, records[:6], True, True, tmp_path)
    assert ours(tok, records[:6], assistant_only_loss=True) == want
    assert all(-100 in labels for _, labels in want)


def test_many_is_record_by_record(tokenizer_dir, tmp_path):
    """Tokenize.many (each shape's strings encoded as one batch on the
    tokenizer's threads, conversations through one batched
    apply_chat_template) gives each record what Tokenize gives it alone,
    in a mix of shapes, with both loss options; among bad records the
    first in order is named, whichever stage finds it."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    mix = (TEXT + MESSAGES + PROMPT_COMPLETION + CONV_PROMPT_COMPLETION) * 3
    wheres = [f"r{i}" for i in range(len(mix))]
    for options in ({"assistant_only_loss": True},
                    {"completion_only_loss": False}):
        encode = ptext.Tokenize(tok, **options)
        assert encode.many(mix, wheres) == [encode(e, w)
                                            for e, w in zip(mix, wheres)]
    encode = ptext.Tokenize(tok, assistant_only_loss=True)
    with pytest.raises(ptext.TextError, match="^r2: text is int"):
        encode.many([TEXT[0], TEXT[1], {"text": 5}], ["r0", "r1", "r2"])
    no_assistant = {"messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ptext.TextError, match="^r1: messages has no "
                       "token to train"):  # found after the batch
        encode.many([MESSAGES[0], no_assistant, {"text": 5}],
                    ["r0", "r1", "r2"])
    failing = tmp_path / "fails.jinja"
    failing.write_text("{% for m in messages %}{% if m.content == 'boom' %}"
                       "{{ raise_exception('no') }}{% endif %}"
                       "{{ m.content }}{% endfor %}")
    tok = ptext.load_tokenizer(tokenizer_dir, chat_template=failing)
    boom = {"messages": [{"role": "user", "content": "boom"}]}
    with pytest.raises(ptext.TextError, match="^r1: the tokenizer's chat "
                       "template fails to render messages"):
        ptext.Tokenize(tok).many([MESSAGES[0], boom, {"text": 5}, boom],
                                 ["r0", "r1", "r2", "r3"])


def _same_flat(a, b):
    import numpy as np
    assert np.array_equal(a.ids, b.ids)
    assert np.array_equal(a.offsets, b.offsets)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        assert np.array_equal(a.mask, b.mask)


def test_pool_is_many_in_order(tokenizer_dir):
    """TokenizePool: records in chunks over worker processes give what
    Tokenize.many gives in this process, array for array; the first bad
    record in order is named whichever worker finds it; a small first
    call keeps it in this process."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    encode = ptext.Tokenize(tok, assistant_only_loss=True)
    mix = (TEXT + MESSAGES + PROMPT_COMPLETION + CONV_PROMPT_COMPLETION) * 4
    wheres = [f"r{i}" for i in range(len(mix))]
    want = ptext.Flat.of(encode.many(mix, wheres))
    pool = ptext.TokenizePool(encode, workers=2, chunk=3, least=1)
    try:
        _same_flat(pool.flat(mix, wheres), want)
        assert pool.pool is not None  # it ran in workers
        bad = list(mix)
        bad[13] = {"text": 5}
        bad[4] = {"messages": [{"role": "user", "content": "x"}]}
        with pytest.raises(ptext.TextError, match="^r4: messages has no "
                           "token to train"):
            pool.flat(bad, wheres)
        _same_flat(pool.flat(mix[:5], wheres[:5]),
                   ptext.Flat.of(encode.many(mix[:5], wheres[:5])))
    finally:
        pool.close()
    small = ptext.TokenizePool(encode, workers=2, chunk=3, least=100)
    _same_flat(small.flat(mix, wheres), want)
    assert small.pool is None


def test_pool_forks_for_conversations_only(tokenizer_dir, monkeypatch):
    """Plain text stays in this process (the Rust tokenizer's own threads
    encode the list); the first batch with a conversation forks every
    worker at once, with the tokenizer's threads off in them and this
    process's environment as it was."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    encode = ptext.Tokenize(tok)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    pool = ptext.TokenizePool(encode, workers=2, chunk=2, least=1)
    try:
        texts = TEXT * 4
        pool.flat(texts, [f"r{i}" for i in range(len(texts))])
        assert pool.pool is None
        pool.flat(MESSAGES * 2, ["r"] * 4)
        assert pool.pool is not None
        assert len(pool.pool._processes) == 2
        pids = set(pool.pool._processes)
        got = {pool.pool.submit(_child_env).result() for _ in range(8)}
        assert {pid for pid, _ in got} <= pids
        assert {env for _, env in got} == {"false"}
        assert "TOKENIZERS_PARALLELISM" not in os.environ
    finally:
        pool.close()


def _child_env():
    return os.getpid(), os.environ.get("TOKENIZERS_PARALLELISM")


def test_workers_give_the_same_set(tmp_path):
    """pack_dataset with 1 and 2 tokenizing processes (400 bundled
    conversations: past the size where processes start) writes
    byte-identical sets; a bad record in the second half is named by its
    line either way."""
    lib_or_skip()
    import json
    from prepack.dataset import DatasetError
    here = os.path.join(ROOT, "fixtures", "text")
    with open(os.path.join(here, "conversations.jsonl")) as f:
        lines = f.read().splitlines()
    data = tmp_path / "c.jsonl"
    data.write_text("\n".join(lines * 2) + "\n")
    sets = []
    for workers in (1, 2):
        out = tmp_path / f"s{workers}"
        prepack.pack_dataset([str(data)], str(out), 512,
                             tokenizer=os.path.join(here, "tokenizer"),
                             assistant_only_loss=True, overlong="split",
                             workers=workers)
        sets.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert sets[0] == sets[1]
    bad = lines * 2
    bad[300] = json.dumps({"messages": [{"role": "user", "content": 1}]})
    data.write_text("\n".join(bad) + "\n")
    for workers in (1, 2):
        with pytest.raises(DatasetError, match=r"c.jsonl:301: "
                           r"messages\[0\].content is not a string"):
            prepack.pack_dataset([str(data)], str(tmp_path / "x"), 512,
                                 tokenizer=os.path.join(here, "tokenizer"),
                                 workers=workers)
        assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="workers must be an integer"):
        prepack.pack_dataset([str(data)], str(tmp_path / "x"), 512,
                             tokenizer=os.path.join(here, "tokenizer"),
                             workers=0)


def test_prompt_not_a_token_prefix_warns_once(tokenizer_dir, tmp_path):
    """A prompt whose last token merges into the completion: trained from
    where the two tokenizations diverge, as TRL trains it (its own
    output), and one TextWarning naming the first such record, also when
    worker processes find them."""
    import warnings
    tok = ptext.load_tokenizer(tokenizer_dir)
    merging = [{"prompt": "Python Softw", "completion": "are licence"},
               {"prompt": "Read the ", "completion": "Python licence"}]
    assert ours(tok, merging) == trl_prepared(tok, merging, False, True,
                                              tmp_path)
    prompt_ids = tok(text=merging[0]["prompt"])["input_ids"]
    full = tok(text=merging[0]["prompt"] + merging[0]["completion"] +
               tok.eos_token)["input_ids"]
    assert full[:len(prompt_ids)] != prompt_ids  # the case at hand
    records = PROMPT_COMPLETION + merging * 3
    wheres = [f"r{i}" for i in range(len(records))]
    first = f"r{len(PROMPT_COMPLETION)}"
    for pool in (None, ptext.TokenizePool(ptext.Tokenize(tok), workers=2,
                                          chunk=2, least=1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if pool is None:
                ptext.Tokenize(tok).many(records, wheres)
            else:
                pool.flat(records, wheres)
                pool.close()
        texts = [str(w.message) for w in caught
                 if issubclass(w.category, ptext.TextWarning)]
        assert len(texts) == 1, texts
        assert texts[0].startswith(first + ": the tokenized prompt is not "
                                   "a prefix")


class _WideTokenizer:
    """A stand-in tokenizer whose ids pass 2^16 (as o200k's do), but for
    texts that start with "n"."""
    eos_token = "</s>"
    chat_template = None

    def __call__(self, text):
        return {"input_ids": [[5, len(t) + (0 if t.startswith("n") else
                                            70000)] for t in text]}


def test_an_id_past_the_stores_width_is_named(tmp_path):
    """Ids that do not fit the chosen token dtype: the record named, never
    narrowed; a wider dtype (or auto) takes them."""
    lib_or_skip()
    import pyarrow as pa
    from prepack.dataset import DatasetError
    table = pa.table({"text": ["a", "bb", "ccc"]})
    with pytest.raises(DatasetError, match=r"table: batch 0, row 0: .*70005"):
        prepack.pack_dataset(table, str(tmp_path / "x"), 16,
                             tokenizer=_WideTokenizer(), token_dtype="uint16")
    assert not (tmp_path / "x").exists()
    stats = prepack.pack_dataset(table, str(tmp_path / "s"), 16,
                                 tokenizer=_WideTokenizer())
    assert stats["input_tokens"] == 6
    assert sorted(int(t) for r in prepack.ShardSet(str(tmp_path / "s"))
                  for t in r["input_ids"] if t > 5) == [70005, 70006, 70007]


# A template that reads what TRL passes beside the messages: tools, parts
# of content, tool calls with no content, and chat_template_kwargs
RICH = (
    "{% if tools %}{{ '<|im_start|>system\nTools: ' + (tools | "
    "map(attribute='function') | map(attribute='name') | join(',')) + "
    "'<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['content'] is string %}{% set c = m['content'] %}"
    "{% elif m['content'] is none %}{% set c = '' %}"
    "{% else %}{% set c = m['content'] | map(attribute='text') | join('') %}"
    "{% endif %}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ c }}"
    "{% if m['tool_calls'] %}{{ 'CALL ' + m['tool_calls'][0]['function']"
    "['name'] }}{% endif %}{{ '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ c + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    "{% if enable_thinking is defined and not enable_thinking %}"
    "{{ 'NOTHINK' }}{% endif %}")
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "w",
    "parameters": {"type": "object", "properties": {}}}}]
RICH_RECORDS = [
    {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Python?"}]},
        {"role": "assistant", "content": [{"type": "text",
                                           "text": "A language."}]}]},
    {"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather",
                                              "arguments": {}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."}]},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "Sunny."}],
     "tools": WEATHER},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "Sunny."}],
     "tools": __import__("json").dumps(WEATHER)},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "Sunny."}],
     "chat_template_kwargs": {"enable_thinking": False}},
    {"conversations": [{"from": "user", "value": "Weather?"},
                       {"from": "assistant", "value": "Sunny."}]}]


@pytest.mark.parametrize("i", range(len(RICH_RECORDS)),
                         ids=["content parts", "tool calls, no content",
                              "tools", "tools as JSON text",
                              "chat_template_kwargs", "ShareGPT from/value"])
def test_what_trl_passes_to_the_template(tokenizer_dir, tmp_path, i):
    """Each record as TRL prepares it, alone and in a batch with records
    of other template arguments: `tools` (a list or its JSON text) and
    `chat_template_kwargs` reach the template, content may be a list of
    parts or absent beside tool calls, ShareGPT's from/value is
    converted."""
    rich = tmp_path / "rich.jinja"
    rich.write_text(RICH)
    tok = ptext.load_tokenizer(tokenizer_dir, chat_template=rich)
    record = RICH_RECORDS[i]
    want = trl_prepared(tok, [record], True, True, tmp_path)
    assert ours(tok, [record], assistant_only_loss=True) == want
    batch = ours(tok, RICH_RECORDS, assistant_only_loss=True)
    assert batch[i] == want[0]


def test_trls_training_template_for_a_known_model(tokenizer_dir, tmp_path):
    """A known model's template without {% generation %} (Qwen2.5's, as
    TRL ships it): with assistant-only loss, TRL's training version of it,
    as SFTTrainer swaps it in; the same ids and mask as TRL."""
    import trl
    from trl.chat_template_utils import get_training_chat_template
    qwen = os.path.join(os.path.dirname(trl.__file__), "chat_templates",
                        "qwen2_5.jinja")
    tok = ptext.load_tokenizer(tokenizer_dir, chat_template=qwen)
    training = get_training_chat_template(tok)
    assert training and "{% generation %}" not in tok.chat_template
    records = [MESSAGES[0], MESSAGES[1]]
    want = trl_prepared(tok, records, True, True, tmp_path, training)
    assert ours(tok, records, assistant_only_loss=True) == want
    assert all(-100 in labels and set(labels) != {-100}
               for _, labels in want)


def test_named_templates_and_refused_text_are_named(tokenizer_dir):
    """A tokenizer holding named templates (a dict): its default is used;
    a text the tokenizer refuses (a lone surrogate) is named by record
    and field, in a batch as alone."""
    tok = ptext.load_tokenizer(tokenizer_dir)
    own = tok.chat_template
    tok.chat_template = {"default": own, "tool_use": own}
    encode = ptext.Tokenize(tok, assistant_only_loss=True)
    assert encode.many(MESSAGES, ["a", "b"]) == \
        ptext.Tokenize(ptext.load_tokenizer(tokenizer_dir),
                       assistant_only_loss=True).many(MESSAGES, ["a", "b"])
    bad = [TEXT[0], {"text": "a \ud800 b"}, TEXT[1]]
    with pytest.raises(ptext.TextError, match=r"^r1: the tokenizer refuses "
                       r"text .*surrogate"):
        ptext.Tokenize(tok).many(bad, ["r0", "r1", "r2"])
    pair = [{"prompt": "x \udfff", "completion": "y"}]
    with pytest.raises(ptext.TextError, match=r"^r0: the tokenizer refuses "
                       r"prompt"):
        ptext.Tokenize(tok).many(pair, ["r0"])


def test_a_record_after_a_dropped_one_is_named_by_its_line(tmp_path):
    """The store's error for a record that comes after dropped ones names
    the record's own line, not the line of the n-th record kept."""
    lib_or_skip()
    import json
    from prepack.dataset import DatasetError
    data = tmp_path / "d.jsonl"
    records = [{"text": "nx"},
               {"prompt": "nab", "completion": ""},  # nothing to train
               {"prompt": "nab", "completion": ""},
               {"text": "wide"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DatasetError, match=r"d.jsonl:4: .*70004"):
        prepack.pack_dataset([str(data)], str(tmp_path / "x"), 16,
                             tokenizer=_WideTokenizer(), token_dtype="uint16",
                             untrained="drop", add_eos=False)


@pytest.mark.parametrize("read_rows", [None, 1])
def test_dropping_a_record_never_joins_two_groups(tmp_path, read_rows):
    """Groups 7, 8, 7 with the 8 dropped stay two groups (7 and 7 apart),
    and 7, 7, 7 with the middle dropped one group: the rows equal those of
    the records kept with their groups made explicit, one record a batch
    or all in one. Dropping every record is an error, not an empty set."""
    lib_or_skip()
    import pyarrow as pa
    from prepack.dataset import DatasetError
    here = os.path.join(ROOT, "fixtures", "text")
    none = [{"role": "user", "content": "x"}]

    def some(n):  # longest first, so that a join changes the order
        return [{"role": "user", "content": "x"},
                {"role": "assistant", "content": "the licence " * n}]
    options = dict(tokenizer=os.path.join(here, "tokenizer"),
                   assistant_only_loss=True, read_rows=read_rows)
    for groups, same in (([7, 8, 7, 3], [7, 9, 3]), ([7, 7, 7, 3], [7, 7, 3])):
        table = pa.table({"messages": [some(10), none, some(1), some(5)],
                          "group": groups})
        got = prepack.pack_dataset(table, str(tmp_path / "g"), 256,
                                   untrained="drop", overwrite=True,
                                   **options)
        want = prepack.pack_dataset(
            pa.table({"messages": [some(10), some(1), some(5)],
                      "group": same}),
            str(tmp_path / "w"), 256, overwrite=True, **options)
        assert got["rows"] == want["rows"], groups
        for a, b in zip(prepack.ShardSet(str(tmp_path / "g")),
                        prepack.ShardSet(str(tmp_path / "w"))):
            for k in a:
                assert str(a[k]) == str(b[k]), (groups, k)
    with pytest.raises(DatasetError, match="every one of its 2 records was "
                       "dropped"):
        prepack.pack_dataset(pa.table({"messages": [none, none]}),
                             str(tmp_path / "x"), 256, untrained="drop",
                             **options)
    assert not (tmp_path / "x").exists()


def test_pool_starts_on_conversations_seen_and_pieces_here(tokenizer_dir):
    """Small batches add up: the processes start once `least`
    conversations have been seen, whatever the batches' sizes. In this
    process, records go to Tokenize.many INLINE at a time (memory does
    not grow with the batch). workers=True is refused."""
    import signal
    tok = ptext.load_tokenizer(tokenizer_dir)
    encode = ptext.Tokenize(tok)
    sizes = []
    many = encode.many
    encode.many = lambda e, w: (sizes.append(len(e)), many(e, w))[1]
    pool = ptext.TokenizePool(encode, workers=2, chunk=4, least=10)
    try:
        batch = MESSAGES * 2
        pool.flat(batch, ["r"] * 4)
        pool.flat(batch, ["r"] * 4)
        assert pool.pool is None and sizes == [4, 4]
        texts = [TEXT[0]] * (ptext.INLINE + 3)
        pool.flat(texts, ["t"] * len(texts))
        assert sizes[2:] == [ptext.INLINE, 3]
        pool.flat(batch, ["r"] * 4)  # 12 conversations seen
        assert pool.pool is not None
        victim = next(iter(pool.pool._processes))
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(ptext.TextError, match="^r and on: a tokenizing "
                           "process died"):
            for _ in range(50):  # until the executor sees it
                pool.flat(batch * 8, ["r"] * 32)
    finally:
        pool.close()
    for bad in (True, 0, 2.0):
        with pytest.raises(ValueError, match="workers must be"):
            ptext.TokenizePool(encode, workers=bad)


def test_the_module_prints_the_warning_as_one_line(tokenizer_dir, tmp_path):
    """python -m prepack: the prefix warning on stderr as one
    "prepack: warning:" line naming the first such record, once."""
    lib_or_skip()
    import json
    import subprocess
    import sys
    data = tmp_path / "p.jsonl"
    pairs = [{"prompt": "A licence", "completion": " text."},
             {"prompt": "Python Softw", "completion": "are licence"},
             {"prompt": "Read the ", "completion": "Python licence"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    p = subprocess.run([sys.executable, "-m", "prepack", "pack", str(data),
                        "-o", str(tmp_path / "s"), "--max-seq-len", "64",
                        "--tokenizer", str(tokenizer_dir)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stderr.splitlines() if "warning" in x.lower()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"prepack: warning: {data}:2: the tokenized "
                               f"prompt is not a prefix"), p.stderr


@pytest.mark.parametrize("late", ["{not json", '{"text": 5}',
                                  '{"text": "nope"}'],
                         ids=["invalid JSON", "bad field", "a wide id"])
def test_the_first_bad_record_in_order_across_stages(tmp_path, late):
    """Two bad records in one batch, found by different stages (reading
    JSON, tokenizing, the store's width check): the earlier line is named,
    whichever stage finds the later one first."""
    lib_or_skip()
    from prepack.dataset import DatasetError
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "nx"}\n{"text": "wide"}\n' + late + "\n")
    with pytest.raises(DatasetError, match=r"d.jsonl:2: .*70004"):
        prepack.pack_dataset([str(data)], str(tmp_path / "x"), 16,
                             tokenizer=_WideTokenizer(), token_dtype="uint16",
                             add_eos=False)
    data.write_text('{"text": "nx"}\n{"text": 7}\n' + late + "\n")
    with pytest.raises(DatasetError, match=r"d.jsonl:2: text is int"):
        prepack.pack_dataset([str(data)], str(tmp_path / "x"), 16,
                             tokenizer=_WideTokenizer(), token_dtype="uint16",
                             add_eos=False)
