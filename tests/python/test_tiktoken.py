"""A tiktoken encoding file as --tokenizer (prepack/_tiktoken.py), held to
the two other worlds: tiktoken's own encoder (the same ids on varied text,
for r50k_base's split pattern and for cl100k_base's and o200k_base's), and
the bundled corpus (fixtures/corpus/python-docs.jsonl.zst), tokenized by
the npm package gpt-tokenizer: its sections' text, tokenized again, gives
exactly its ids.

The fixtures are fixtures/text/make_tiktoken.sh's: r50k_base.tiktoken.zst
(the GPT-2 ranks as gpt-tokenizer 4.0.0 holds them, decompressed here:
users have plain files) and python-docs-sections.jsonl.zst (300 sections'
text, the corpus line each came from)."""
import base64
import hashlib
import json
import os
import sys

import pytest
import zstandard

from conftest import CORPUS, ROOT
from text_support import CHATML, rows_by_sequence, run_as_printed

transformers = pytest.importorskip("transformers")
tiktoken = pytest.importorskip("tiktoken")
openai_public = pytest.importorskip("tiktoken_ext.openai_public")

import prepack  # noqa: E402
from prepack import text as ptext  # noqa: E402

HERE = os.path.join(ROOT, "fixtures", "text")
SECTIONS = os.path.join(HERE, "python-docs-sections.jsonl.zst")
EOT = 50256

VARIED = [
    "Hello, world! I'm here; you're there; they'll've gone. DON'T SHOUT",
    "  leading spaces, trailing spaces   \n\n\n   \t\t tabs\r\n\r\nCRLF  ",
    "numbers 1 12 123 1234 12345 3.14159 -0.5e-10 1,000,000 0x1F 2026-12-04",
    "unicode: naïve café Zürich Łódź ελληνικά русский 中文字符 日本語のテキスト "
    "한국어 తెలుగు العربية עברית 🙂🚀👩‍👩‍👧 e\u0301 \u00a0nbsp ∀x∈ℝ",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\n"
    "if __name__ == '__main__':\n\tprint(f(3))\n",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "special in text: a<|endoftext|>b <|endoftext|>",
    "",
    " ",
    "\n",
    "a" * 300 + " " + "ab" * 200 + "!!!???..." * 30,
    "Ends with spaces and a newline   \n",
]


def lib_or_skip():
    """Packing needs libprepack, which a sanitizer build's Python cannot
    load (tokenizing runs there all the same)."""
    if not os.environ.get("PREPACK_LIBRARY") and \
            not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


@pytest.fixture(scope="module")
def r50k(tmp_path_factory):
    """fixtures/text's r50k_base.tiktoken, as a user has it (plain)."""
    path = tmp_path_factory.mktemp("tiktoken") / "r50k_base.tiktoken"
    with open(os.path.join(HERE, "r50k_base.tiktoken.zst"), "rb") as f:
        path.write_bytes(zstandard.ZstdDecompressor().stream_reader(f)
                         .read())
    return str(path)


@pytest.fixture(scope="module")
def tok(r50k):
    return ptext.load_tokenizer(r50k)


def tiktoken_definition(name, path, monkeypatch):
    """tiktoken's Encoding `name` over the ranks in `path` (read by
    tiktoken, uncached), and the sha256 it expects of its file: its
    constructor run with its loader pointed at the file."""
    from tiktoken.load import load_tiktoken_bpe
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    hashes = []

    def local(_url, expected_hash=None):
        hashes.append(expected_hash)
        return load_tiktoken_bpe(path)

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", local)
    spec = openai_public.ENCODING_CONSTRUCTORS[name]()
    return tiktoken.Encoding(**spec), hashes[0]


def test_the_fixture_is_tiktokens_r50k_base(r50k, monkeypatch):
    """The ranks gpt-tokenizer holds, written by make_tiktoken.mjs, are
    byte for byte the file tiktoken fetches for r50k_base (its sha256)."""
    _, expected = tiktoken_definition("r50k_base", r50k, monkeypatch)
    with open(r50k, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == expected


def test_equal_to_tiktoken_on_varied_text(r50k, tok, monkeypatch):
    """One text at a time and as a batch (the Rust threads), the ids are
    tiktoken's encode(text, allowed_special="all"); EOS is <|endoftext|>."""
    enc, _ = tiktoken_definition("r50k_base", r50k, monkeypatch)
    want = [enc.encode(t, allowed_special="all") for t in VARIED]
    assert [tok(text=t)["input_ids"] for t in VARIED] == want
    assert tok(text=VARIED)["input_ids"] == want
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", EOT)
    assert tok.decode(want[3]) == VARIED[3]


@pytest.mark.parametrize("name,specials", [
    ("cl100k_base", {"<|endoftext|>": 100257, "<|endofprompt|>": 100276}),
    ("o200k_base", {"<|endoftext|>": 199999, "<|endofprompt|>": 200018})])
def test_other_encodings_split_and_special_ids(r50k, tmp_path, monkeypatch,
                                               name, specials):
    """The file's name picks tiktoken's split pattern and special tokens:
    r50k's first 8,000 ranks and its numbers under cl100k_base's and
    o200k_base's names encode as tiktoken does with that definition
    (cl100k_base's numbers split in threes), special tokens at their own
    ids (cl100k_base's past a hole in the ranks), and a piece that is a
    token is that token even where no merge makes it, as tiktoken looks
    pieces up."""
    path = tmp_path / f"{name}.tiktoken"
    with open(r50k, "rb") as f:
        lines = f.readlines()
    numbers = [line for line in lines[8001:]
               if base64.b64decode(line.split()[0]).isdigit()]
    path.write_bytes(b"".join(lines[:8000] + numbers) +  # and a token no
                     base64.b64encode(b" prepackaging") + b" 8000\n")  # merge
    enc, _ = tiktoken_definition(name, str(path), monkeypatch)
    got = ptext.load_tokenizer(path)
    texts = VARIED + [f"x{s}y {s}" for s in specials] + [" prepackaging"]
    want = [enc.encode(t, allowed_special="all") for t in texts]
    assert got(text=texts)["input_ids"] == want
    assert want[-1] == [8000]  # the piece is a token: that token
    for s, i in specials.items():
        assert got.convert_tokens_to_ids(s) == i == enc.encode(
            s, allowed_special="all")[0]
    assert got.eos_token_id == specials["<|endoftext|>"]


@pytest.mark.parametrize("pattern,text", [
    (r"\p{N}{1,3}+|\D+", "1234567 89 0"),
    (r"a{1,2}+a|[\s\S]", "aa aaa aaaa"),
    (r"[]x]{1,2}+x|[\s\S]", "]x ]]x x]xx"),
    (r"(?:ab){1,}+a|[\s\S]", "aba abab ababa"),
    (r"\p{L}{2}+\p{L}|[\s\S]", "ab abc"),
])
def test_possessive_intervals_read_as_tiktoken_reads_them(pattern, text):
    """onig(): X{m,n}+ splits in the tokenizers library's Oniguruma as the
    possessive does in the regex module (Perl's reading, tiktoken's)."""
    import regex
    from tokenizers import Regex, pre_tokenizers
    from prepack._tiktoken import onig
    split = pre_tokenizers.Split(Regex(onig(pattern)), behavior="isolated")
    assert [p for p, _ in split.pre_tokenize_str(text)] == \
        regex.findall(pattern, text)


def sections():
    with open(SECTIONS, "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(line) for line in text.splitlines()]


def test_the_bundled_corpus_tokenized_again(tok):
    """THE check, one world against the other: 300 sections of the Python
    documentation, tokenized through prepack.text with the tiktoken file,
    give exactly the ids gpt-tokenizer gave them in the bundled corpus;
    with EOS, the same ids and <|endoftext|>."""
    picked = sections()
    with open(CORPUS, "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read() \
            .splitlines()
    assert len(picked) == 300 and len(lines) == 4679
    wanted = []
    for s in picked:
        line = json.loads(lines[s["line"]])
        assert (line["doc"], line["title"]) == (s["doc"], s["title"])
        wanted.append(line["input_ids"])
    assert sum(not s["text"].isascii() for s in picked) >= 80
    records = [{"text": s["text"]} for s in picked]
    wheres = [f"section {s['line']}" for s in picked]
    got = ptext.Tokenize(tok, add_eos=False).many(records, wheres)
    assert [ids for ids, _ in got] == wanted
    got = ptext.Tokenize(tok).many(records[:20], wheres[:20])
    assert [ids for ids, _ in got] == [w + [EOT] for w in wanted[:20]]
    # the Hugging Face tokenizer made of the file (conversations, and the
    # text path when tiktoken's own encoder is not used) gives them too
    assert tok(text=[s["text"] for s in picked])["input_ids"] == wanted


def test_plain_text_through_tiktokens_own_encoder(r50k, tok):
    """Tokenize encodes plain text with tiktoken's encoder (what
    load_tokenizer keeps beside the Hugging Face tokenizer): the ids of
    the Hugging Face tokenizer on varied text, special tokens in the text
    included; once the tokenizer has another token, not that encoder."""
    assert tok.tiktoken_encoding.n_vocab == len(tok)
    encode = ptext.Tokenize(tok, add_eos=False)
    assert encode._tiktoken() is tok.tiktoken_encoding
    texts = VARIED + ["a <|endoftext|> b"]
    got = encode.many([{"text": t} for t in texts], ["r"] * len(texts))
    assert [ids for ids, _ in got] == tok(text=texts)["input_ids"]
    assert EOT in got[-1][0]
    grown = ptext.load_tokenizer(r50k)
    grown.add_tokens(["prepack-only-token"])
    assert ptext.Tokenize(grown)._tiktoken() is None




def test_the_command_packs_text_and_chats_with_a_tiktoken_file(
        r50k, tok, tmp_path, prepack_bin):
    """`prepack pack --tokenizer FILE.tiktoken --chat-template FILE` prints
    the python -m prepack command with the paths; run as printed, it packs
    sections of the corpus and conversations into a set `prepack verify`
    passes: each section the corpus's ids and <|endoftext|>, all trained;
    each conversation as apply_chat_template renders it, the assistant's
    turns alone trained (assistant_masks), and those tokens read back as
    the assistant's turns and nothing else."""
    lib_or_skip()
    picked = [s for s in sections() if len(s["text"]) < 3000][:40]
    with open(os.path.join(HERE, "conversations.jsonl")) as f:
        chats = [json.loads(line) for line in f][:12]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in
                            [{"text": s["text"]} for s in picked] + chats))
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    out = tmp_path / "set"
    args = ["pack", str(data), "-o", str(out), "--max-seq-len", "1024",
            "--tokenizer", r50k, "--chat-template", str(template),
            "--assistant-only-loss"]
    run_as_printed(prepack_bin, args, out)
    with open(CORPUS, "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read() \
            .splitlines()
    want = {}
    for i, s in enumerate(picked):
        ids = json.loads(lines[s["line"]])["input_ids"] + [EOT]
        want[i] = (ids, [1] * len(ids))
    tok.chat_template = CHATML
    for i, chat in enumerate(chats, len(picked)):
        r = tok.apply_chat_template(chat["messages"], tokenize=True,
                                    return_dict=True,
                                    return_assistant_tokens_mask=True)
        want[i] = (r["input_ids"], r["assistant_masks"])
        trained = tok.decode([t for t, m in zip(*want[i]) if m])
        assert trained == "".join(m["content"] + "<|im_end|>"
                                  for m in chat["messages"]
                                  if m["role"] == "assistant")
    assert rows_by_sequence(out) == want


BYTES = b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b
                for b in range(256))  # a ranks file of the bytes alone


@pytest.mark.parametrize("content,message", [
    (b"IQ== 0\nIg== 1\nnot-base64! 2\n", r", line 3: the token is not "
     r"base64: 'not-base64!'"),
    (b"IQ== 0\n\nIg==\n", r", line 3: not a tiktoken ranks line "
     r"\('base64\(token\) rank'\): 'Ig=='"),
    (b"IQ== 0\nIg== x1\n", r", line 2: not a tiktoken ranks line"),
    (b"IQ== 0\nIg== 0\n", r", line 2: token or rank 0 given twice"),
    (b'{"model": {"type": "BPE"}}\n', r", line 1: not a tiktoken ranks line"),
    (b"IQ== 4294967295\n", r", line 1: an empty token or a rank past "
     r"4294967294"),
    (b"\n\n", r": no ranks"),
    (BYTES + b"IQ== 256\n", r", line 257: token or rank 256 given twice"),
    (BYTES[:-9], r": byte 0xff has no rank \(1 bytes have none"),
    (BYTES + b"ISI= 256\n", r": 257 ranks, but r50k_base has 50256"),
], ids=["base64", "no rank", "rank not a number", "twice", "json",
        "rank too large", "empty", "token twice", "a byte unranked",
        "truncated"])
def test_a_bad_ranks_file_is_named_with_its_line(tmp_path, content, message):
    path = tmp_path / "r50k_base.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ptext.TextError,
                       match="^" + str(path).replace(".", r"\.") + message):
        ptext.load_tokenizer(path)


def test_an_unknown_encoding_or_a_missing_file_is_named(r50k, tmp_path):
    """The name picks the encoding: another is refused listing the names
    tiktoken knows; a missing path is named, and pack_dataset writes
    nothing."""
    lib_or_skip()
    from prepack.dataset import DatasetError, pack_dataset
    path = tmp_path / "gpt5.tiktoken"
    with open(r50k, "rb") as f:
        path.write_bytes(f.read())
    with pytest.raises(ptext.TextError, match=r"gpt5\.tiktoken: a tiktoken "
                       r"file is named for its encoding, and 'gpt5' is not "
                       r"one tiktoken knows: name it one of .*"
                       r"cl100k_base\.tiktoken, .*r50k_base\.tiktoken"):
        ptext.load_tokenizer(path)
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "x"}\n')
    for bad, message in [(path, "is not one tiktoken knows"),
                         (tmp_path / "r50k_base.tiktoken.gone",
                          "no such tokenizer directory .* or tiktoken file")]:
        with pytest.raises(DatasetError, match=message):
            pack_dataset([str(data)], tmp_path / "set", 64, tokenizer=bad)
        assert not (tmp_path / "set").exists()


def test_without_tiktoken_the_error_says_what_to_install(r50k, monkeypatch):
    for name in ("tiktoken_ext", "tiktoken_ext.openai_public"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ptext.TextError, match=r"r50k_base\.tiktoken: a "
                       r"tiktoken file needs the Python package 'tiktoken' "
                       r"\(.*\): pip install 'prepack-tokens\[text\]'$"):
        ptext.load_tokenizer(r50k)
