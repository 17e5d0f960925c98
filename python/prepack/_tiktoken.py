"""A tiktoken encoding file (`r50k_base.tiktoken`: one `base64(token
bytes) rank` line per token, as OpenAI publishes them and tiktoken caches
them) as a Hugging Face fast tokenizer, built in memory and read from disk
only (no network), so that EOS, chat templates, assistant masks and batch
encoding on Rust threads work as for a tokenizer directory (prepack.text).

The file holds the ranks alone; the split pattern and the special tokens
come from the encoding's name, the file's name without `.tiktoken`
(`cl100k_base.tiktoken` is cl100k_base), as the installed tiktoken
defines them (`tiktoken_ext.openai_public`): its constructor for that name
runs with its loader answered from the file, so nothing is fetched and
nothing is copied from tiktoken's source.

The BPE: ids are the ranks, special tokens keep their ids (cl100k_base's
start at 100257, past a hole), merges are every split of a token into two
tokens, in the rank order of the merged token (the rule of transformers'
TikTokenConverter), and a piece that is a token whole is that token
(ignore_merges), as tiktoken encodes. Special tokens written in the text
are read as special tokens (tiktoken's `allowed_special="all"`), as a
Hugging Face tokenizer reads its own. tests/python/test_tiktoken.py holds
the ids equal to tiktoken's and to the bundled corpus's.
"""
import base64
import binascii
import os
import re
import threading

from . import _optional

ENDOFTEXT = "<|endoftext|>"
_MAX_RANK = 2**32 - 2  # ids are uint32, the largest left for a special
_INTERVAL = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}(\+)?")
_PROPERTY = re.compile(r"\\[pP]\{[^}]*\}")
_LOCK = threading.Lock()  # the constructors' loader is swapped for a call


class TiktokenError(ValueError):
    """A tiktoken file that cannot be read: the message names the file
    (and the line)."""


def encoding_name(path):
    """The encoding a file's name says: its base name without .tiktoken."""
    name = os.path.basename(os.fspath(path))
    return name[:-len(".tiktoken")] if name.endswith(".tiktoken") else name


def names():
    """The encodings the installed tiktoken defines."""
    openai_public = _optional.require("tiktoken_ext.openai_public",
                                      "text", "a tiktoken file")
    return sorted(openai_public.ENCODING_CONSTRUCTORS)


def read_ranks(path):
    """{token bytes: rank} from a tiktoken file, each line checked: the
    error names the file and the line."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TiktokenError(f"{path}: cannot read the tiktoken file "
                            f"({e.strerror})") from None
    ranks, seen = {}, set()
    for n, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise TiktokenError(
                f"{path}, line {n}: not a tiktoken ranks line "
                f"('base64(token) rank'): {_shown(line)}")
        try:
            token = base64.b64decode(parts[0], validate=True)
        except binascii.Error:
            raise TiktokenError(f"{path}, line {n}: the token is not "
                                f"base64: {_shown(parts[0])}") from None
        rank = int(parts[1])
        if not token or rank > _MAX_RANK:
            raise TiktokenError(f"{path}, line {n}: an empty token or a "
                                f"rank past {_MAX_RANK}: {_shown(line)}")
        if token in ranks or rank in seen:
            raise TiktokenError(f"{path}, line {n}: token or rank {rank} "
                                f"given twice")
        ranks[token] = rank
        seen.add(rank)
    if not ranks:
        raise TiktokenError(f"{path}: no ranks (an empty tiktoken file)")
    return ranks


def encoding_spec(name, ranks):
    """tiktoken's definition of encoding `name` ({"pat_str",
    "special_tokens", ...}) with these ranks, None for a name it does not
    know. Its constructor runs with its loaders answering these ranks; the
    lock keeps two loads apart (a tiktoken.get_encoding in another thread
    meanwhile would see them too)."""
    op = _optional.require("tiktoken_ext.openai_public", "text",
                           "a tiktoken file")
    constructor = op.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        return None

    def ranks_file(*_args, **_kwargs):
        return dict(ranks)  # gpt2's data-gym files: r50k_base's ranks

    with _LOCK:
        saved = op.load_tiktoken_bpe, op.data_gym_to_mergeable_bpe_ranks
        op.load_tiktoken_bpe = op.data_gym_to_mergeable_bpe_ranks = \
            ranks_file
        try:
            spec = constructor()
        finally:
            op.load_tiktoken_bpe, op.data_gym_to_mergeable_bpe_ranks = saved
    return spec


def load(path):
    """A transformers PreTrainedTokenizerFast from a tiktoken file, its
    EOS `<|endoftext|>`, with the tiktoken.Encoding of the same file as
    its `tiktoken_encoding`."""
    path = os.fspath(path)
    name = encoding_name(path)
    try:
        known = names()
    except _optional.MissingPackage as e:  # the file named, and [text]
        raise TiktokenError(f"{path}: {e}") from None
    if name not in known:
        raise TiktokenError(
            f"{path}: a tiktoken file is named for its encoding, and "
            f"{name!r} is not one tiktoken knows: name it one of "
            f"{', '.join(n + '.tiktoken' for n in known)}")
    ranks = read_ranks(path)
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:  # the BPE would drop such bytes from the text unsaid
        raise TiktokenError(f"{path}: byte {missing[0]:#04x} has no rank "
                            f"({len(missing)} bytes have none; tiktoken's "
                            f"encodings rank every byte)")
    spec = encoding_spec(name, ranks)
    special = spec["special_tokens"]
    size = spec.get("explicit_n_vocab")
    if size is not None and len(ranks) + len(special) != size:
        raise TiktokenError(
            f"{path}: {len(ranks)} ranks, but {name} has {size - len(special)}"
            f" (a truncated file, or another encoding's)")
    clash = set(special.values()) & set(ranks.values())
    if clash:
        raise TiktokenError(f"{path}: rank {min(clash)} is {name}'s special "
                            f"token id too (another encoding's file?)")
    fast = _optional.require("transformers", "text", "a tiktoken file")
    tok = fast.PreTrainedTokenizerFast(
        tokenizer_object=_bpe(ranks, spec["pat_str"], special),
        eos_token=ENDOFTEXT if ENDOFTEXT in special else None)
    # tiktoken's own encoder beside it: the same ids for text (tested),
    # several times faster; prepack.text encodes plain text with it
    tiktoken = _optional.require("tiktoken", "text", "a tiktoken file")
    tok.tiktoken_encoding = tiktoken.Encoding(
        name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
        special_tokens=special)
    return tok


def _bpe(ranks, pattern, special):
    """The byte-level BPE tokenizers.Tokenizer that encodes as tiktoken."""
    tk = _optional.require("tokenizers", "text", "a tiktoken file")
    AddedToken, Regex, Tokenizer = tk.AddedToken, tk.Regex, tk.Tokenizer
    decoders, models = tk.decoders, tk.models
    pre_tokenizers = tk.pre_tokenizers
    bytes_to_unicode = _optional.require(
        "transformers.convert_slow_tokenizer", "text",
        "a tiktoken file").bytes_to_unicode
    byte = bytes_to_unicode()  # GPT-2's printable stand-ins for bytes
    table = {b: byte[b] for b in range(256)}
    vocab = {t.decode("latin-1").translate(table): r
             for t, r in ranks.items()}
    text = {r: t for t, r in vocab.items()}
    merges, get = [], ranks.get  # (merged rank, left rank, right rank)
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left = get(token[:i])
            if left is not None:
                right = get(token[i:])
                if right is not None:
                    merges.append((rank, left, right))
    merges.sort()
    vocab.update(special)
    tok = Tokenizer(models.BPE(
        vocab, [(text[m[1]], text[m[2]]) for m in merges], fuse_unk=False,
        ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(onig(pattern)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in sorted(special, key=special.get)])
    return tok


def onig(pattern):
    """tiktoken's split pattern (Rust's fancy-regex) as the tokenizers
    library's Oniguruma reads it, with Ruby's syntax: there `X{1,3}+` is
    `(X{1,3})+`, any number of X, not a possessive `X{1,3}` (cl100k_base
    splits numbers into threes with `\\p{N}{1,3}+`), so it becomes the
    atomic group `(?>X{1,3})`, which matches as the possessive does. The
    other possessives (`++`, `*+`, `?+`) mean the same in both."""
    out, groups, atom, i = [], [], None, 0  # atom: its index in out
    while i < len(pattern):
        interval = _INTERVAL.match(pattern, i)
        if interval:
            if interval.group(1):  # possessive: an atomic group instead
                if atom is None:
                    raise ValueError(f"{pattern!r}: the quantifier at {i} "
                                     f"follows no atom")
                out[atom:] = ["(?>" + "".join(out[atom:]) +
                              interval.group(0)[:-1] + ")"]
            else:
                out.append(interval.group(0))
            atom, i = None, interval.end()
            continue
        c, start = pattern[i], len(out)
        if c == "\\":
            prop = _PROPERTY.match(pattern, i)
            j = prop.end() if prop else i + 2
        elif c == "[":
            j = _class_end(pattern, i)
        else:
            j = i + 1
        out.append(pattern[i:j])
        if c == "(":
            groups.append(start)
            atom = None
        elif c == ")":
            atom = groups.pop() if groups else None
        else:  # a quantifier or an alternative is not an atom
            atom = None if c in "*+?|" else start
        i = j
    return "".join(out)


def _class_end(pattern, i):
    """The index past the character class opening at i (escapes and
    nested classes skipped; a ']' first in it is a literal)."""
    j = i + 1
    if pattern[j:j + 1] == "^":
        j += 1
    if pattern[j:j + 1] == "]":
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "[":
            j = _class_end(pattern, j)
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    raise ValueError(f"{pattern!r}: the class at {i} is not closed")


def _shown(raw):
    """A line's first bytes, printable."""
    return repr(raw[:60].decode("utf-8", "replace")) + \
        ("..." if len(raw) > 60 else "")
