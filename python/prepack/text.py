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

Every error names the record (`where`) and the field at fault.
tests/python/test_text.py holds each shape equal to the installed TRL's
own preparation of the same examples with the same tokenizer.
"""
import os
import re

ROLES = ("system", "developer", "user", "assistant", "tool")
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TextError(ValueError):
    """A record that cannot be tokenized: the message names it and the
    field at fault."""


def load_tokenizer(path, chat_template=None):
    """A Hugging Face tokenizer directory (tokenizer.json and
    tokenizer_config.json), read from disk only (no network), with
    chat_template (a Jinja file's path) in place of its own when given."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise TextError(f"{path}: no such tokenizer directory (a Hugging "
                        f"Face tokenizer: tokenizer.json and "
                        f"tokenizer_config.json)")
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TextError(f"{path}: cannot load the tokenizer ({e})") from None
    if chat_template is not None:
        try:
            with open(chat_template, encoding="utf-8") as f:
                tok.chat_template = f.read()
        except OSError as e:
            raise TextError(f"{chat_template}: cannot read the chat "
                            f"template ({e.strerror})") from None
    return tok


class Tokenize:
    """One record (a dict) to (input_ids, loss_mask) lists, TRL's way.

    assistant_only_loss: train only the assistant's tokens of
    conversations (needs `{% generation %}` in the template);
    completion_only_loss: train only the completion of prompt-completion
    pairs; add_eos: append EOS to text and string completions unless
    there already; text_field: the language-modelling column."""

    def __init__(self, tokenizer, *, assistant_only_loss=False,
                 completion_only_loss=True, add_eos=True, text_field="text",
                 template_name="the tokenizer's chat template"):
        self.tok = tokenizer
        self.assistant_only_loss = assistant_only_loss
        self.completion_only_loss = completion_only_loss
        self.add_eos = add_eos
        self.text_field = text_field
        self.template_name = template_name

    def __call__(self, example, where):
        if not isinstance(example, dict):
            raise TextError(f"{where}: not an object")
        if "prompt" in example:
            return self._prompt_completion(example, where)
        if "messages" in example:
            ids, masks = self._chat(example["messages"], where, "messages")
            return ids, masks
        if self.text_field in example:
            text = _string(example, self.text_field, where)
            ids = self.tok(text=self._with_eos(text))["input_ids"]
            return list(ids), None
        raise TextError(f"{where}: none of the fields {self.text_field!r}, "
                        f"'prompt' and 'completion', or 'messages'")

    def many(self, examples, wheres):
        """[self(e, w) for e, w in zip(examples, wheres)], equal record by
        record, with the plain-text records' tokenizing batched: a fast
        tokenizer encodes a list on every core (Rust threads), which is
        where the time of language-modelling data goes."""
        out = [None] * len(examples)
        texts, at = [], []
        for i, (e, w) in enumerate(zip(examples, wheres)):
            if isinstance(e, dict) and "prompt" not in e and \
                    "messages" not in e and self.text_field in e:
                texts.append(self._with_eos(_string(e, self.text_field, w)))
                at.append(i)
            else:
                out[i] = self(e, w)
        if texts:
            for i, ids in zip(at, self.tok(text=texts)["input_ids"]):
                out[i] = (list(ids), None)
        return out

    def _with_eos(self, text):
        eos = self.tok.eos_token
        if self.add_eos and eos and not text.endswith(eos):
            return text + eos
        return text

    def _prompt_completion(self, example, where):
        if "completion" not in example:
            raise TextError(f"{where}: a 'prompt' without a 'completion'")
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, list) or isinstance(completion, list):
            _messages(prompt, where, "prompt")
            _messages(completion, where, "completion")
            prompt_ids = self._render(prompt, where, "prompt",
                                      add_generation_prompt=True)
            ids, masks = self._chat(prompt + completion, where,
                                    "prompt + completion")
        else:
            prompt = _string(example, "prompt", where)
            completion = _string(example, "completion", where)
            prompt_ids = list(self.tok(text=prompt)["input_ids"])
            ids = list(self.tok(text=prompt + self._with_eos(
                completion))["input_ids"])
            masks = None
        if not self.completion_only_loss:
            return ids, masks
        start = _common_prefix(prompt_ids, ids)
        completion_mask = [0] * start + [1] * (len(ids) - start)
        if masks is None:
            return ids, completion_mask
        return ids, [a & b for a, b in zip(masks, completion_mask)]

    def _chat(self, messages, where, field):
        _messages(messages, where, field)
        if not self.assistant_only_loss:
            return self._render(messages, where, field), None
        template = self.tok.chat_template
        if not template or not _GENERATION.search(template):
            raise TextError(f"{where}: {self.template_name} has no "
                            f"{{% generation %}} block, so the assistant's "
                            f"tokens cannot be told apart: give a template "
                            f"that marks them, or train on every token")
        out = self._apply(messages, where, field,
                          return_assistant_tokens_mask=True)
        masks = list(out["assistant_masks"])
        if 1 not in masks:
            raise TextError(f"{where}: {field} has no assistant tokens to "
                            f"train (its mask is all zeros)")
        return list(out["input_ids"]), masks

    def _render(self, messages, where, field, **kwargs):
        return list(self._apply(messages, where, field, **kwargs)
                    ["input_ids"])

    def _apply(self, messages, where, field, **kwargs):
        try:
            return self.tok.apply_chat_template(
                messages, tokenize=True, return_dict=True, **kwargs)
        except Exception as e:  # Jinja's errors, a missing template
            raise TextError(f"{where}: {self.template_name} fails to "
                            f"render {field}: {e}") from None


def _string(example, field, where):
    v = example[field]
    if not isinstance(v, str):
        raise TextError(f"{where}: {field} is {type(v).__name__}, not a "
                        f"string")
    return v


def _messages(messages, where, field):
    """A list of {role, content} with a known role and string content."""
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
        if not isinstance(m.get("content"), str):
            raise TextError(f"{where}: {field}[{i}].content is not a "
                            f"string")


def _common_prefix(a, b):
    """TRL's common_prefix_length: the completion starts where the
    tokenized prompt and prompt+completion first differ."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
