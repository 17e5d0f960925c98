"""Text, prompt-completion pairs and conversations to token ids and loss
masks, as TRL's SFTTrainer prepares them (its `_prepare_dataset`), with a
tokenizer the user already has on disk.

The four shapes, named as TRL names its dataset formats:

- language modelling: `{"text": str}`; EOS appended unless the text ends
  with it; every token trained;
- prompt-completion: `{"prompt": str, "completion": str}`; EOS appended to
  the completion; the completion trained (completion_only_loss), starting
  where the tokenized prompt and prompt+completion diverge (TRL's
  common-prefix rule);
- conversational: `{"messages": [{"role", "content"}, ...]}` through the
  chat template; the assistant's tokens trained (assistant_only_loss, from
  the template's `{% generation %}` blocks);
- conversational prompt-completion: `prompt` and `completion` as message
  lists; both rules.

As TRL: a record's `tools` and `chat_template_kwargs` go to the template,
ShareGPT's `conversations` ({from, value}) become `messages`, and a known
model's template without `{% generation %}` is replaced by TRL's training
version when assistant-only loss needs one. Tokenize.many takes records
in batches; TokenizePool spreads them over processes.

Every error names the record (`where`) and the field at fault.
tests/python/test_text.py holds each shape equal to the installed TRL's
own preparation of the same examples with the same tokenizer.
"""
import json
import os
import re
import warnings
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from . import _optional

ROLES = ("system", "developer", "user", "assistant", "tool")
UNTRAINED = ("error", "drop")
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TextError(ValueError):
    """A record that cannot be tokenized: the message names it and the
    field at fault; .record is its index in the records given (0 where
    not known)."""
    record = 0


class TextWarning(UserWarning):
    """A record tokenized as TRL tokenizes it, but not as its writer may
    expect: shown once a run, naming the first such record."""


def load_tokenizer(path, chat_template=None):
    """A Hugging Face tokenizer directory (tokenizer.json and
    tokenizer_config.json) or a tiktoken encoding file (r50k_base.tiktoken:
    _tiktoken.py), read from disk only (no network), with chat_template (a
    Jinja file's path) in place of its own when given."""
    path = os.fspath(path)
    if os.path.isfile(path):
        from . import _tiktoken
        try:
            tok = _tiktoken.load(path)
        except _tiktoken.TiktokenError as e:
            raise TextError(str(e)) from None
    elif not os.path.isdir(path):
        raise TextError(f"{path}: no such tokenizer directory (a Hugging "
                        f"Face tokenizer: tokenizer.json and "
                        f"tokenizer_config.json) or tiktoken file")
    else:
        auto = _optional.require("transformers", "text",
                                 "a Hugging Face tokenizer")
        try:
            tok = auto.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise TextError(f"{path}: cannot load the tokenizer ({e})") \
                from None
    if chat_template is not None:
        try:
            with open(chat_template, encoding="utf-8") as f:
                tok.chat_template = f.read()
        except OSError as e:
            raise TextError(f"{chat_template}: cannot read the chat "
                            f"template ({e.strerror})") from None
    return tok


# The text options of pack_dataset, prepack.stream and python -m prepack,
# with their defaults (workers, the tokenizing processes, is
# pack_dataset's alone)
OPTIONS = {"tokenizer": None, "chat_template": None,
           "assistant_only_loss": False, "completion_only_loss": True,
           "add_eos": True, "text_field": "text", "untrained": "error"}


def from_options(tokenizer, chat_template=None, **rules):
    """The Tokenize the text options ask for. tokenizer is a tokenizer
    directory (loaded from disk, with chat_template in place of its own
    when given) or a loaded tokenizer (whose chat_template is set on it,
    not given here); rules are Tokenize's. TextError for a tokenizer or
    template that cannot be read."""
    on_disk = isinstance(tokenizer, (str, os.PathLike))
    if chat_template is not None and not on_disk:
        raise ValueError("chat_template with a loaded tokenizer: set its "
                         "chat_template instead")
    name = f"the chat template {os.fspath(chat_template)}" \
        if chat_template is not None else \
        f"{os.fspath(tokenizer)}'s chat template" if on_disk else \
        "the tokenizer's chat template"
    if on_disk:
        tokenizer = load_tokenizer(tokenizer, chat_template)
    return Tokenize(tokenizer, template_name=name, **rules)


class Tokenize:
    """One record (a dict) to (input_ids, loss_mask) lists, TRL's way.

    assistant_only_loss: train only the assistant's tokens of
    conversations (needs `{% generation %}` in the template);
    completion_only_loss: train only the completion of prompt-completion
    pairs; add_eos: append EOS to text and string completions unless
    there already; text_field: the language-modelling column;
    untrained: a record with no token to train (its loss mask all zeros)
    is an error ("error") or dropped ("drop": None in its place)."""

    def __init__(self, tokenizer, *, assistant_only_loss=False,
                 completion_only_loss=True, add_eos=True, text_field="text",
                 untrained="error",
                 template_name="the tokenizer's chat template"):
        if untrained not in UNTRAINED:
            raise ValueError(f"untrained is {untrained!r}: one of "
                             f"{', '.join(UNTRAINED)}")
        self.untrained = untrained
        self.tok = tokenizer
        self.assistant_only_loss = assistant_only_loss
        self.completion_only_loss = completion_only_loss
        self.add_eos = add_eos
        self.text_field = text_field
        self.template_name = template_name
        self.warned = False
        self.template = None  # None: the tokenizer's own
        if assistant_only_loss:
            self.template = self._training_template()

    def _training_template(self):
        """The template for assistant-only loss, as TRL's SFTTrainer picks
        it: the tokenizer's own when it marks the assistant's turns
        ({% generation %}), else TRL's training version of a known
        model's template (Qwen, Llama 3, Gemma, Phi-3, DeepSeek, ...;
        installed TRL's get_training_chat_template), else None (the
        error then names the template, on the first conversation)."""
        own = _template_text(self.tok)
        if own is not None and _GENERATION.search(own):
            return None
        trl = _optional.find("trl.chat_template_utils")
        if trl is None:
            return None
        get_training_chat_template = trl.get_training_chat_template
        try:
            patched = get_training_chat_template(self.tok)
        except Exception:  # a template TRL does not know
            return None
        if patched and _GENERATION.search(patched):
            self.template_name = f"TRL's training version of " \
                f"{self.template_name}"
            return patched
        return None

    def __call__(self, example, where):
        """(input_ids, loss_mask or None) of one record; where names it in
        errors."""
        return self.many([example], [where])[0]

    def many(self, examples, wheres):
        self.notes = []  # this batch's warnings, by record
        try:
            return self._many(examples, wheres)
        finally:
            if self.notes:  # the first in input order
                self.warn(min(self.notes, key=lambda n: n[0])[1])

    def _many(self, examples, wheres):
        """[self(e, w) for e, w in zip(examples, wheres)], equal record by
        record (the first bad record in order is the error, as alone), in
        batches: each shape's strings go to the tokenizer as one list,
        which a fast tokenizer encodes on every core (Rust threads), and
        conversations to apply_chat_template as one batch, which renders
        them and then encodes them as one list."""
        examples = [_from_value(e) if isinstance(e, dict) else e
                    for e in examples]
        batch = _Batch(examples, wheres)
        for i, (e, w) in enumerate(zip(examples, wheres)):
            batch.kinds[i] = batch.guard(i, self._classify, e, w)
        self._texts_many(batch)
        self._prompt_completion_many(batch)
        self._conversations_many(batch)
        for i, out in enumerate(batch.out):
            if out is not None and out[1] is not None and 1 not in out[1]:
                self._untrained(batch, i)
        batch.raise_first()
        return batch.out

    def _untrained(self, batch, i):
        """A record whose loss mask is all zeros: refused, or dropped."""
        if self.untrained == "drop":
            batch.out[i] = None
            return
        field = {"chat": "messages", "chat pair": "prompt + completion",
                 "pair": "completion"}[batch.kinds[i]]
        batch.fail(i, TextError(
            f"{batch.wheres[i]}: {field} has no token to train (its loss "
            f"mask is all zeros; untrained='drop', --untrained drop, "
            f"drops such records)"))

    def _classify(self, example, where):
        """The record's shape ("text", "pair", "chat" or "chat pair"),
        with its fields checked."""
        if not isinstance(example, dict):
            raise TextError(f"{where}: not an object")
        if "prompt" in example:
            if "completion" not in example:
                raise TextError(f"{where}: a 'prompt' without a "
                                f"'completion'")
            if isinstance(example["prompt"], list) or \
                    isinstance(example["completion"], list):
                _messages(example["prompt"], where, "prompt")
                _messages(example["completion"], where, "completion")
                self._check_generation(where)
                _template_kwargs(example, where)
                return "chat pair"
            _string(example, "prompt", where)
            _string(example, "completion", where)
            return "pair"
        if "messages" in example:
            _messages(example["messages"], where, "messages")
            self._check_generation(where)
            _template_kwargs(example, where)
            return "chat"
        if self.text_field in example:
            _string(example, self.text_field, where)
            return "text"
        raise TextError(f"{where}: none of the fields {self.text_field!r}, "
                        f"'prompt' and 'completion', or 'messages'")

    def _texts_many(self, batch):
        at = batch.shaped("text")
        texts = [self._with_eos(batch.examples[i][self.text_field])
                 for i in at]
        for i, ids in zip(at, self._encoded(batch, at, texts,
                                            self.text_field)):
            if ids is not None:
                batch.out[i] = (ids, None)

    def _encoded(self, batch, at, texts, field):
        """_encode_many(texts), or when the tokenizer refuses the list
        (a lone surrogate, say), each alone: None for those it refuses,
        each named."""
        try:
            return self._encode_many(texts)
        except (TypeError, ValueError, UnicodeError):
            pass
        out = []
        for i, t in zip(at, texts):
            try:
                out.append(self._encode_many([t])[0])
            except (TypeError, ValueError, UnicodeError) as e:
                why = _not_utf8(t) or str(e)
                batch.fail(i, TextError(f"{batch.wheres[i]}: the tokenizer "
                                        f"refuses {field} ({why})"))
                out.append(None)
        return out

    def _prompt_completion_many(self, batch):
        at = batch.shaped("pair")
        prompts = [batch.examples[i]["prompt"] for i in at]
        fulls = [batch.examples[i]["prompt"] +
                 self._with_eos(batch.examples[i]["completion"]) for i in at]
        for i, p, ids in zip(at, self._encoded(batch, at, prompts, "prompt"),
                             self._encoded(batch, at, fulls, "completion")):
            if p is not None and ids is not None and i not in batch.failed:
                batch.out[i] = self._completion_only(p, ids, None,
                                                     batch.wheres[i], i)

    def _conversations_many(self, batch):
        """Conversations, and conversational pairs: the prompt rendered
        with the generation prompt (where the completion starts), then
        prompt + completion as one conversation."""
        ex = batch.examples
        chats, pairs = batch.shaped("chat"), batch.shaped("chat pair")
        prompts = dict(zip(pairs, self._apply_many(
            batch, pairs, [ex[i]["prompt"] for i in pairs], "prompt",
            add_generation_prompt=True)))
        pairs = [i for i in pairs if prompts[i] is not None]
        convs = [ex[i]["messages"] for i in chats] + \
            [ex[i]["prompt"] + ex[i]["completion"] for i in pairs]
        fields = ["messages"] * len(chats) + \
            ["prompt + completion"] * len(pairs)
        done = self._chat_many(batch, chats + pairs, convs, fields)
        for i, out in zip(chats + pairs, done):
            if out is not None:
                batch.out[i] = out if i not in prompts else \
                    self._completion_only(prompts[i], *out, batch.wheres[i],
                                          i)

    def _chat_many(self, batch, at, convs, fields):
        """(ids, assistant masks or None) of each conversation, None
        where it failed."""
        kwargs = {"return_assistant_tokens_mask": True} \
            if self.assistant_only_loss else {}
        return self._apply_many(batch, at, convs, fields, full=True,
                                **kwargs)

    def _apply_many(self, batch, at, convs, fields, full=False, **kwargs):
        """apply_chat_template of convs: each one's ids (or (ids, assistant
        masks) when full), None where it failed. Records with the same
        template arguments (their `tools` and `chat_template_kwargs`, as
        TRL passes them) go as one batch; when a batch fails, each alone,
        to name the record that fails."""
        if isinstance(fields, str):
            fields = [fields] * len(at)
        groups = {}
        for k, i in enumerate(at):
            key = _template_kwargs(batch.examples[i], batch.wheres[i])
            groups.setdefault(key, []).append(k)
        done = [None] * len(at)
        for key, ks in groups.items():
            extra = dict(kwargs, **_kwargs_of(key))
            if self.template is not None:
                extra["chat_template"] = self.template
            got = self._apply_group(batch, [at[k] for k in ks],
                                    [convs[k] for k in ks],
                                    [fields[k] for k in ks], full, extra)
            for k, out in zip(ks, got):
                done[k] = out
        return done

    def _apply_group(self, batch, at, convs, fields, full, kwargs):
        try:
            out = self.tok.apply_chat_template(
                convs, tokenize=True, return_dict=True, **kwargs)
            return [_result(out, j, full) for j in range(len(convs))]
        except Exception:  # Jinja's errors: find the record
            pass
        alone = []
        for i, conv, field in zip(at, convs, fields):
            out = batch.guard(i, self._apply, conv, batch.wheres[i], field,
                              **kwargs)
            alone.append(None if out is None else _result(out, None, full))
        return alone

    def _encode_many(self, texts):
        """Each text's ids, as self.tok(text=texts) gives them; through
        the Rust tokenizer's batch call without offsets when the
        tokenizer is a fast one in its default state: no offsets or
        per-token strings are made and kept (the time is the same within
        noise: 4.19 s against 4.53 s for 8 MB, medians of 3), checked
        equal by test_text's equality tests."""
        if not texts:
            return []
        native = self._tiktoken()
        if native is not None:
            return native.encode_batch(texts, allowed_special="all",
                                       num_threads=len(
                                           os.sched_getaffinity(0)))
        fast = self._fast_backend()
        if fast is not None:
            return [e.ids for e in fast.encode_batch_fast(
                texts, add_special_tokens=True)]
        return [list(ids) for ids in self.tok(text=texts)["input_ids"]]

    def _tiktoken(self):
        """tiktoken's encoder for a tokenizer load_tokenizer made from a
        tiktoken file, when it still encodes as that file does (no
        tokens added since, special tokens matched in text): the same ids
        as the tokenizer (test_tiktoken), 2.5x faster (bench_text)."""
        native = getattr(self.tok, "tiktoken_encoding", None)
        if native is None or getattr(self.tok, "split_special_tokens",
                                     False) or len(self.tok) != \
                native.n_vocab:
            return None
        return native

    def _fast_backend(self):
        """The Rust tokenizer when calling it directly is what
        self.tok(text=...) does: no truncation or padding configured,
        special tokens matched as the wrapper matches them."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None or not hasattr(backend, "encode_batch_fast"):
            return None
        split = getattr(self.tok, "split_special_tokens", False)
        if backend.truncation is not None or backend.padding is not None \
                or backend.encode_special_tokens != bool(split):
            return None
        return backend

    def _check_generation(self, where):
        if not self.assistant_only_loss:
            return
        template = self.template or _template_text(self.tok)
        if not template or not _GENERATION.search(template):
            raise TextError(f"{where}: {self.template_name} has no "
                            f"{{% generation %}} block, so the assistant's "
                            f"tokens cannot be told apart: give a template "
                            f"that marks them, or train on every token")

    def _completion_only(self, prompt_ids, ids, masks, where, i):
        """(ids, loss mask) of a prompt-completion pair: the completion
        trained from where prompt and prompt+completion diverge, and only
        the assistant's tokens of it when masks are given."""
        if not self.completion_only_loss:
            return ids, masks
        start = _common_prefix(prompt_ids, ids)
        if start < len(prompt_ids) and not self.warned:
            self.notes.append((i, (
                f"{where}: the tokenized prompt is not a prefix of the "
                f"tokenized prompt + completion (tokens merge across the "
                f"boundary, or the template renders the prompt alone "
                f"differently): the completion is trained from where they "
                f"diverge, and the prompt's end "
                f"{self.tok.decode(prompt_ids[start:])!r} is not in the "
                f"sequence, as TRL does. Shown once; other records are "
                f"likely the same")))
        completion_mask = [0] * start + [1] * (len(ids) - start)
        if masks is None:
            return ids, completion_mask
        return ids, [a & b for a, b in zip(masks, completion_mask)]

    def warn(self, message):
        """A TextWarning, the first of this Tokenize only."""
        if not self.warned:
            self.warned = True
            warnings.warn(message, TextWarning, stacklevel=2)

    def _with_eos(self, text):
        eos = self.tok.eos_token
        if self.add_eos and eos and not text.endswith(eos):
            return text + eos
        return text

    def _apply(self, messages, where, field, **kwargs):
        try:
            return self.tok.apply_chat_template(
                messages, tokenize=True, return_dict=True, **kwargs)
        except Exception as e:  # Jinja's errors, a missing template
            raise TextError(f"{where}: {self.template_name} fails to "
                            f"render {field}: {e}") from None


class Flat:
    """Tokenized records as three arrays: ids (uint32) end to end,
    offsets (int64, one more than records: record i is
    ids[offsets[i]:offsets[i + 1]]) and loss mask (uint8 beside ids, or
    None when no record has one): what crosses between processes and
    what the store takes."""

    def __init__(self, ids, offsets, mask, dropped=()):
        self.ids, self.offsets, self.mask = ids, offsets, mask
        self.dropped = list(dropped)  # indices of records left out

    @classmethod
    def of(cls, encoded):
        """Flat of Tokenize.many's [(ids, mask or None) or None (a record
        dropped), ...]; a record without a mask is trained on every
        token."""
        dropped = [i for i, e in enumerate(encoded) if e is None]
        encoded = [e for e in encoded if e is not None]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(i) for i, _ in encoded], out=offsets[1:])
        ids = np.concatenate([np.asarray(i, np.uint32) for i, _ in encoded]) \
            if encoded else np.zeros(0, np.uint32)
        if all(m is None for _, m in encoded):
            return cls(ids, offsets, None, dropped)
        mask = np.concatenate([
            np.asarray(m, np.uint8) if m is not None else
            np.ones(len(i), np.uint8) for i, m in encoded])
        return cls(ids, offsets, mask, dropped)

    @classmethod
    def joined(cls, parts, sizes):
        """One Flat of parts in order, part k made of sizes[k] records."""
        if len(parts) == 1:
            return parts[0]
        dropped, base = [], 0
        for p, n in zip(parts, sizes):
            dropped += [base + i for i in p.dropped]
            base += n
        ids = np.concatenate([p.ids for p in parts])
        offsets, total = [np.zeros(1, np.int64)], 0
        for p in parts:
            offsets.append(p.offsets[1:] + total)
            total += len(p.ids)
        mask = None
        if any(p.mask is not None for p in parts):
            mask = np.concatenate([
                p.mask if p.mask is not None else
                np.ones(len(p.ids), np.uint8) for p in parts])
        return cls(ids, np.concatenate(offsets), mask, dropped)


class TokenizePool:
    """Tokenize.many on every core. Plain text and string pairs are
    encoded here, as one list on the Rust tokenizer's threads. Batches
    that hold conversations go in chunks to worker processes: a chat
    template's rendering and transformers' assistant-mask loop are
    Python, one core, and most of a conversation's time. The workers are
    forked (the tokenizer is not loaded again) and results come back in
    input order, so the output does not depend on their number.

    workers: processes (None: the cores this process may use; 1: none,
    all in this process). They start with the first batch of at least
    `least` records that holds a conversation (smaller inputs stay in
    this process), all at once and with the tokenizer's own threads off
    in them (TOKENIZERS_PARALLELISM=false: a Rust thread pool does not
    survive a fork; the workers are the parallelism). close() stops
    them."""

    def __init__(self, encode, workers=None, chunk=128, least=256):
        if workers is not None and (isinstance(workers, bool) or
                                    not isinstance(workers, int) or
                                    workers < 1):
            raise ValueError(f"workers must be a positive integer, not "
                             f"{workers!r}")
        self.encode = encode
        self.workers = workers or len(os.sched_getaffinity(0))
        self.chunk, self.least = chunk, least
        self.pool = None
        self.seen = 0  # conversations so far: the processes start at least

    def flat(self, examples, wheres):
        """Flat of encode.many(examples, wheres); TextError naming the
        first bad record in order. Here, the records go to encode.many in
        pieces of INLINE records, so that memory does not grow with the
        batch (measured: 577 MiB more for 30 MiB of conversations at
        once, 10 MiB in pieces of 128)."""
        rendered = _rendered(examples)
        if rendered:
            self.seen += len(examples)
        if self.pool is None and self.workers > 1 and \
                self.seen >= self.least and rendered:
            self._start()
        chunk = self.chunk if self.pool is not None and rendered else INLINE
        chunks = [(examples[i:i + chunk], wheres[i:i + chunk])
                  for i in range(0, len(examples), chunk)]
        if self.pool is None or not rendered:
            results = (_tokenize_here(self.encode, c) for c in chunks)
        else:
            results = self.pool.map(_tokenize_chunk, chunks)
        parts = []
        try:
            for k, (part, warned, error) in enumerate(results):
                for message in warned:
                    self.encode.warn(message)
                if error is not None:
                    failed = TextError(error[0])
                    failed.record = k * chunk + error[1]
                    raise failed
                parts.append(part)
        except BrokenProcessPool:
            raise TextError(f"{wheres[0]} and on: a tokenizing process "
                            f"died (killed, or out of memory?)") from None
        return Flat.joined(parts, [len(e) for e, _ in chunks]) if parts \
            else Flat.of([])

    def _start(self):
        import concurrent.futures
        import multiprocessing
        saved = os.environ.get(_PARALLELISM)
        os.environ[_PARALLELISM] = "false"  # what the forks inherit
        try:
            self.pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("fork"),
                initializer=_child_start, initargs=(self.encode,))
            # every worker forked now, while the variable is set: with
            # fork, the executor starts all of them at its first task
            self.pool.submit(os.getpid).result()
        finally:
            if saved is None:
                del os.environ[_PARALLELISM]
            else:
                os.environ[_PARALLELISM] = saved

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


_PARALLELISM = "TOKENIZERS_PARALLELISM"
INLINE = 1024  # records a Tokenize.many call in this process


def _rendered(examples):
    """Whether any record goes through the chat template."""
    return any(isinstance(e, dict) and ("messages" in e or isinstance(
        e.get("prompt"), list) or isinstance(e.get("completion"), list))
        for e in examples)


# A worker process's Tokenize, set once by its initializer: the state of a
# child process, never of the caller's.
_CHILD = {}


def _child_start(encode):
    _CHILD["encode"] = encode


def _tokenize_here(encode, chunk):
    """_tokenize_chunk's result, in this process (warnings shown here)."""
    try:
        return Flat.of(encode.many(*chunk)), (), None
    except TextError as e:
        return None, (), (str(e), e.record)


def _tokenize_chunk(chunk):
    """A worker's (Flat of its chunk or None, its TextWarnings' messages,
    the first bad record's (message, index in the chunk) or None)."""
    examples, wheres = chunk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TextWarning)
        try:
            flat, error = Flat.of(_CHILD["encode"].many(examples, wheres)), \
                None
        except TextError as e:
            flat, error = None, (str(e), e.record)
    return flat, [str(w.message) for w in caught
                  if issubclass(w.category, TextWarning)], error


class _Batch:
    """Records being tokenized together: their shapes, their results in
    order, and the first error of each, so that the batch names the first
    bad record in order, as record-by-record tokenizing would."""

    def __init__(self, examples, wheres):
        self.examples, self.wheres = examples, wheres
        self.kinds = [None] * len(examples)
        self.out = [None] * len(examples)
        self.failed = {}

    def guard(self, i, fn, *args, **kwargs):
        """fn(...), or None with record i failed by its TextError."""
        try:
            return fn(*args, **kwargs)
        except TextError as e:
            self.fail(i, e)
            return None

    def fail(self, i, error):
        self.failed.setdefault(i, error)

    def shaped(self, kind):
        return [i for i, k in enumerate(self.kinds)
                if k == kind and i not in self.failed]

    def raise_first(self):
        """The first record's error, its index in the batch as .record."""
        if self.failed:
            first = min(self.failed)
            error = self.failed[first]
            error.record = first
            raise error


def _string(example, field, where):
    v = example[field]
    if not isinstance(v, str):
        raise TextError(f"{where}: {field} is {type(v).__name__}, not a "
                        f"string")
    return v


def _messages(messages, where, field):
    """A list of messages as chat templates take them: {role, content}
    with a known role; content a string, a list of parts, or absent (or
    null) where the message holds tool_calls."""
    if not isinstance(messages, list) or not messages:
        raise TextError(f"{where}: {field} is not a non-empty list of "
                        f"messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TextError(f"{where}: {field}[{i}] is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise TextError(f"{where}: {field}[{i}].role is {role!r}, not "
                            f"one of {', '.join(ROLES)}")
        content = m.get("content")
        if not (isinstance(content, str) or _parts(content) or
                (content is None and m.get("tool_calls"))):
            raise TextError(f"{where}: {field}[{i}].content is not a "
                            f"string or a list of parts")


def _not_utf8(text):
    """Why text cannot be UTF-8 (a lone surrogate, from JSON's \\ud800
    escapes), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return f"a lone surrogate {text[e.start]!r} at character {e.start}"


def _parts(content):
    """Whether content is a list of parts ({"type": ...} objects)."""
    return isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str)
        for p in content)


def _from_value(example):
    """A ShareGPT record (`conversations` of {from, value}) as TRL's
    maybe_convert_to_chatml converts it: `messages` of {role, content};
    other records as they are."""
    if "conversations" not in example or "messages" in example or \
            not isinstance(example["conversations"], list):
        return example
    out = {k: v for k, v in example.items() if k != "conversations"}
    out["messages"] = [
        {("role" if k == "from" else "content" if k == "value" else k): v
         for k, v in m.items()} if isinstance(m, dict) else m
        for m in example["conversations"]]
    return out


def _template_text(tok):
    """The tokenizer's default chat template as text (a tokenizer with
    named templates has a dict), or None."""
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) else None


def _template_kwargs(example, where):
    """A record's own template arguments as TRL passes them: `tools` (a
    list, or JSON text of one) and `chat_template_kwargs` (an object), as
    a hashable key (JSON text) to batch records that share them."""
    tools = example.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise TextError(f"{where}: tools is not JSON ({e})") from None
    if tools is not None and not isinstance(tools, list):
        raise TextError(f"{where}: tools is {type(tools).__name__}, not a "
                        f"list")
    extra = example.get("chat_template_kwargs")
    if extra is not None and not isinstance(extra, dict):
        raise TextError(f"{where}: chat_template_kwargs is "
                        f"{type(extra).__name__}, not an object")
    if tools is None and not extra:
        return ""
    try:
        # key order kept: a template's tojson renders it
        return json.dumps({"tools": tools, **(extra or {})})
    except TypeError as e:
        raise TextError(f"{where}: tools or chat_template_kwargs hold a "
                        f"value that is not JSON ({e})") from None


def _kwargs_of(key):
    return json.loads(key) if key else {}


def _result(out, j, full):
    """Record j of an apply_chat_template output (None: unbatched): ids,
    or (ids, assistant mask or None) when full."""
    ids = out["input_ids"] if j is None else out["input_ids"][j]
    if not full:
        return list(ids)
    masks = out.get("assistant_masks")
    mask = None if masks is None else masks if j is None else masks[j]
    return list(ids), (list(mask) if mask is not None else None)


def _common_prefix(a, b):
    """TRL's common_prefix_length: the completion starts where the
    tokenized prompt and prompt+completion first differ."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
