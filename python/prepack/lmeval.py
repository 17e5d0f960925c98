"""lm-evaluation-harness through prepacked batches: `PrepackHFLM`, a
subclass of lm-eval's `HFLM` registered as the model "prepack-hf", scores
loglikelihood requests (multiple choice: prefill only) with
prepack.prefill.score: every request of a run planned once, packed into
rows and scored one forward per batch of at most `max_tokens` token
slots, instead of HFLM's batches padded to their longest request. The
results equal HFLM's (tests/python/test_prefill_hf.py); generate_until is
HFLM's own.

    import lm_eval, prepack.lmeval
    lm = prepack.lmeval.PrepackHFLM(pretrained=model, tokenizer=tok, max_tokens=16384)
    lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

or from the shell, `python -m prepack.lmeval --model prepack-hf
--model_args pretrained=PATH,max_tokens=16384 --tasks hellaswag` (lm-eval's
own command, with this module imported so that the name is registered).
"""

import contextlib

from . import _optional
from .prefill import score

register_model = _optional.require("lm_eval.api.registry", "lmeval",
                                   "prepack.lmeval").register_model
HFLM = _optional.require("lm_eval.models.huggingface", "lmeval",
                         "prepack.lmeval").HFLM


@register_model("prepack-hf")
class PrepackHFLM(HFLM):
    """HFLM with prepacked loglikelihood batches. max_tokens: the token
    slots of one packed forward (rows x the longest request); default
    batch_size x max_length, the most an HFLM batch of that size holds."""

    def __init__(self, *args, max_tokens=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tokens = int(max_tokens) if max_tokens else None

    def _token_budget(self):
        if self.max_tokens:
            return self.max_tokens
        size = self.batch_size if isinstance(self.batch_size, int) else 1
        return max(1, size) * self.max_length

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        torch = _optional.require("torch", "torch", "prepack.lmeval")
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        autocast = torch.autocast(device_type=self.device.type,
                                  dtype=self.mixed_precision_dtype) \
            if self.mixed_precision_dtype is not None else contextlib.nullcontext()
        with autocast:
            results = score(self.model, pairs, max_tokens=self._token_budget(),
                            overlong="alone", max_length=self.max_length,
                            softmax_dtype=self.softmax_dtype)
        for (key, _, _), answer in zip(requests, results):
            if key is not None:  # None: loglikelihood_rolling's windows
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results


def main():
    _optional.require("lm_eval.__main__", "lmeval", "prepack.lmeval").cli_evaluate()


if __name__ == "__main__":
    main()
