"""prepack.stream with text: records (text, prompt-completion pairs,
conversations) tokenized by prepack.text as they stream, equal to the same
records tokenized beforehand; bad records named by their position; a
StreamingPackedDataset over text resuming exactly, its state recording the
text options."""
import json
import os

import numpy as np
import pytest

if not os.environ.get("PREPACK_LIBRARY"):
    pytest.skip("needs libprepack (PREPACK_LIBRARY; sanitizer builds cannot be "
                "loaded)", allow_module_level=True)
pytest.importorskip("transformers")

from conftest import ROOT  # noqa: E402

import prepack.stream as stream  # noqa: E402
from prepack.stream import StreamError, StreamingPackedDataset  # noqa: E402
from prepack.text import Tokenize, load_tokenizer  # noqa: E402

HERE = os.path.join(ROOT, "fixtures", "text")
TOKENIZER = os.path.join(HERE, "tokenizer")


@pytest.fixture(scope="module")
def records():
    """The bundled conversations, and from every third one a text record
    and a prompt-completion pair made of its turns: all the shapes, with
    and without a loss mask, in one stream."""
    with open(os.path.join(HERE, "conversations.jsonl")) as f:
        chats = [json.loads(line) for line in f]
    out = []
    for i, c in enumerate(chats):
        out.append(c)
        if i % 3 == 0:
            turns = [m["content"] for m in c["messages"]]
            out.append({"text": " ".join(turns), "source": None})
            out.append({"prompt": turns[1], "completion": turns[2]})
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


def pretokenized(tokenizer, records, **options):
    encode = Tokenize(tokenizer, **options)
    out = []
    for i, r in enumerate(records):
        ids, mask = encode({k: v for k, v in r.items() if v is not None},
                           f"record {i}")
        out.append({"input_ids": ids, "loss_mask": mask})
    return out


def equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(np.asarray(x[k]), np.asarray(y[k])), k


def test_text_equals_the_records_tokenized_first(records, tokenizer):
    """More records than a chunk, so chunks meet; ids, masks and labels
    (-100 where the mask is 0) equal those of the same records tokenized
    by Tokenize and streamed as ids."""
    assert len(records) > stream.TEXT_CHUNK
    opts = dict(max_seq_len=512, window=16, batch_rows=4, form="varlen",
                tensors="np")
    got = list(stream.pack(records, tokenizer=TOKENIZER,
                           assistant_only_loss=True, **opts))
    want = list(stream.pack(pretokenized(tokenizer, records,
                                         assistant_only_loss=True), **opts))
    equal(got, want)
    labels = np.concatenate([np.asarray(b["labels"]).ravel() for b in got])
    assert (labels == -100).any() and (labels != -100).any()
    # a loaded tokenizer, and the other options, the same way
    options = dict(completion_only_loss=False, add_eos=False)
    equal(list(stream.pack(records, tokenizer=tokenizer, **options, **opts)),
          list(stream.pack(pretokenized(tokenizer, records, **options),
                           **opts)))


def test_bad_records_are_named_by_position(records):
    bad = list(records[:300]) + [{"messages": [{"role": "bot",
                                                "content": "hi"}]}]
    with pytest.raises(StreamError, match=r"^record 300: messages\[0\]\.role"):
        list(stream.pack(bad, 512, tokenizer=TOKENIZER))
    with pytest.raises(StreamError, match="^record 1: not an object"):
        list(stream.pack([records[0], "text"], 512, tokenizer=TOKENIZER))
    with pytest.raises(StreamError, match="no-such-dir: no such tokenizer"):
        list(stream.pack(records, 512, tokenizer="no-such-dir"))
    with pytest.raises(ValueError, match="chat_template without"):
        list(stream.pack(records, 512, chat_template="t.jinja"))


def test_streaming_dataset_with_text_resumes(records):
    opts = dict(max_seq_len=512, window=8, batch_rows=2, tensors="np",
                tokenizer=TOKENIZER, assistant_only_loss=True)
    whole = list(StreamingPackedDataset(records, **opts))
    ds = StreamingPackedDataset(records, **opts)
    it = iter(ds)
    first = [next(it) for _ in range(7)]
    state = ds.state_dict()
    assert state["text"] == {
        "tokenizer": TOKENIZER, "chat_template": None,
        "assistant_only_loss": True, "completion_only_loss": True,
        "add_eos": True, "text_field": "text", "untrained": "error"}
    again = StreamingPackedDataset(records, **opts)
    again.load_state_dict(state)
    equal(first + list(again), whole)
    # a state taken with other text options, or none, is refused
    other = StreamingPackedDataset(records, **dict(
        opts, assistant_only_loss=False))
    with pytest.raises(StreamError, match="other text options"):
        other.load_state_dict(state)
    plain = StreamingPackedDataset([[1, 2]], max_seq_len=512, window=8,
                                   batch_rows=2)
    with pytest.raises(StreamError, match="fields"):
        plain.load_state_dict(state)
    with pytest.raises(StreamError, match="fields"):
        again.load_state_dict(plain.state_dict())


def test_dataloader_workers_tokenize_their_shares(records):
    """Two DataLoader workers, each tokenizing its own share: every record
    once, its tokens the ones it has streamed alone."""
    from torch.utils.data import DataLoader
    some = records[:40]
    ds = StreamingPackedDataset(some, 512, window=8, batch_rows=2,
                                tensors="np", tokenizer=TOKENIZER)
    got = {}
    for b in DataLoader(ds, batch_size=None, num_workers=2):
        ids, cu = np.asarray(b["input_ids"]), np.asarray(b["cu_seqlens"])
        for j, sid in enumerate(np.asarray(b["seq_ids"]).tolist()):
            got[sid] = ids[cu[j]:cu[j + 1]].tolist()
    alone = {i: np.asarray(b["input_ids"]).tolist()
             for i, r in enumerate(some)
             for b in stream.pack([r], 512, tokenizer=TOKENIZER)}
    assert got == alone


def test_records_with_nothing_to_train_are_dropped_on_request(records):
    """untrained="drop": a conversation without an assistant turn leaves
    the stream (the others as they were); by default it is named."""
    none = {"messages": [{"role": "user", "content": "only a question"}]}
    mixed = list(records[:5]) + [none] + list(records[5:10])
    opts = dict(tokenizer=TOKENIZER, assistant_only_loss=True)
    with pytest.raises(StreamError, match="record 5: messages has no "
                       "token to train"):
        list(stream.pack(mixed, 512, **opts))
    got = list(stream.pack(mixed, 512, untrained="drop", **opts))
    want = list(stream.pack(records[:10], 512, **opts))
    for row in want:  # a sequence's id is its place in the stream
        row["seq_ids"] = np.asarray([i + (i >= 5) for i in row["seq_ids"]],
                                    dtype=np.asarray(row["seq_ids"]).dtype)
    equal(got, want)
