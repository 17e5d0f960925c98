"""Prepacked prefill with real transformers models (prepack.prefill.generate,
score, plan_batches; prepack.lmeval): greedy tokens equal model.generate on
each prompt alone and on a left-padded batch, for Llama, GPT-2 (absolute
positions), Qwen2 and Mistral (sliding windows shorter than the prompts),
under sdpa and eager; loglikelihoods equal the installed lm-evaluation-
harness's HFLM. Tiny random-weight models from configs, float32, CPU."""
import os
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import ROOT  # noqa: E402
from flash_reference import use_reference_flash  # noqa: E402
from prepack import prefill  # noqa: E402
from prepack.prefill import PrefillError, plan_batches  # noqa: E402

V = 97
EOS = 96
TOKENIZER = os.path.join(ROOT, "fixtures", "text", "tokenizer")


@pytest.fixture(autouse=True)
def needs_library():
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("PREPACK_LIBRARY not set (sanitizer builds cannot be loaded)")


def tiny(arch, vocab=V, positions=256, **extra):
    """A 2-layer random model; initializer_range 0.5 so that greedy
    decoding does not settle on one token (a weak test otherwise)."""
    torch.manual_seed(0)
    common = dict(vocab_size=vocab, pad_token_id=0, eos_token_id=EOS,
                  initializer_range=0.5, **extra)
    llama_like = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=positions)
    if arch == "llama":
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_like, **common))
    elif arch == "gpt2":
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=positions, **common))
    elif arch == "qwen2":  # layer 0 full, layer 1 sliding over 5 tokens
        m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            **llama_like, use_sliding_window=True, sliding_window=5,
            max_window_layers=1, **common))
    elif arch == "mistral":  # every layer sliding over 5 tokens
        m = transformers.MistralForCausalLM(transformers.MistralConfig(
            **llama_like, sliding_window=5, **common))
    return m.eval()


def prompts_of(lengths, seed=1):
    rnd = random.Random(seed)
    return [[rnd.randrange(2, EOS) for _ in range(n)] for n in lengths]


LENGTHS = [7, 1, 12, 3, 9, 2, 5, 1, 4]


def alone(model, p, new):
    out = model.generate(input_ids=torch.tensor([p]), max_new_tokens=new,
                         do_sample=False, pad_token_id=0)
    return out[0, len(p):].tolist()


def left_padded(model, prompts, new):
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                         do_sample=False, pad_token_id=0)
    return [out[i, width:].tolist() for i in range(len(prompts))]


def until_eos(tokens):
    return tokens[:tokens.index(EOS) + 1] if EOS in tokens else tokens


@pytest.mark.parametrize("arch,impl", [("llama", "sdpa"), ("llama", "eager"),
                                       ("gpt2", "sdpa"), ("gpt2", "eager"),
                                       ("qwen2", "sdpa"), ("qwen2", "eager"),
                                       ("mistral", "sdpa"), ("mistral", "eager")])
def test_greedy_tokens_equal_generate_alone_and_left_padded(arch, impl):
    model = tiny(arch)
    model.set_attn_implementation(impl)
    prompts = prompts_of(LENGTHS)
    # max_tokens 24 over rows of 11: two rows a batch, several batches
    got = prefill.generate(model, prompts, max_new_tokens=8, max_tokens=24,
                           do_sample=False)
    padded = left_padded(model, prompts, 8)
    for i, p in enumerate(prompts):
        assert got[i] == alone(model, p, 8), (arch, impl, i)
        assert got[i] == until_eos(padded[i]), (arch, impl, i)
    assert len({tuple(g) for g in got}) > 3  # not one degenerate answer


def flash(model, monkeypatch):
    """The model under transformers' flash_attention_2 path, flash-attn's
    kernels replaced by torch ones (flash_reference.py): flash-attn
    itself needs a GPU."""
    use_reference_flash(monkeypatch)
    model.config._attn_implementation = "flash_attention_2"
    return model


# not GPT-2: transformers' flash path picks a float32 model's target dtype
# from its first nn.Linear, and GPT-2 has Conv1D layers only (flash-attn
# runs in half precision, where no target dtype is looked up)
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_flash_attention_prefill_is_varlen_and_exact(arch, monkeypatch):
    """Under flash_attention_2 the packed rows go in without a mask, with
    cu_seq_lens over the rows read as one stream: greedy tokens equal
    generate alone and left-padded (both also through the flash path)
    and the sdpa model's."""
    prompts = prompts_of(LENGTHS)
    want = prefill.generate(tiny(arch), prompts, max_new_tokens=8, max_tokens=24)
    model = flash(tiny(arch), monkeypatch)
    got = prefill.generate(model, prompts, max_new_tokens=8, max_tokens=24)
    padded = left_padded(model, prompts, 8)
    for i, p in enumerate(prompts):
        assert got[i] == alone(model, p, 8), (arch, i)
        assert got[i] == until_eos(padded[i]), (arch, i)
    assert got == want


def test_flash_bounds_cut_at_every_prompt_and_row(monkeypatch):
    model = flash(tiny("llama"), monkeypatch)
    batch = plan_batches(prompts_of([5, 3, 4, 2, 1]))[0]
    kw = prefill.forward_inputs(model, batch)
    assert "attention_mask" not in kw
    pp, C = batch.packed, batch.packed.capacity
    want = {0, len(batch.rows) * C}
    for j in range(pp.num_prompts):
        r, s, n = int(pp.row[j]), int(pp.start[j]), int(pp.length[j])
        want |= {r * C + s, r * C + s + n}
    want |= {r * C for r in range(len(batch.rows))}
    assert kw["cu_seq_lens_q"].tolist() == sorted(want)
    assert kw["max_length_q"] == max(b - a for a, b in zip(sorted(want), sorted(want)[1:]))
    # one stream without the cuts gives other tokens: the equality above holds for a reason
    real = prefill._varlen_bounds
    monkeypatch.setattr(prefill, "_varlen_bounds", lambda doc: real(torch.zeros_like(doc)))
    prompts = prompts_of(LENGTHS)
    leaky = prefill.generate(model, prompts, max_new_tokens=6, check=False)
    monkeypatch.setattr(prefill, "_varlen_bounds", real)
    assert leaky != prefill.generate(model, prompts, max_new_tokens=6)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_last_logits_equal_each_prompt_alone(arch):
    model = tiny(arch)
    prompts = prompts_of(LENGTHS)
    got = prefill.last_logits(model, prompts, max_tokens=30)
    assert got.shape == (len(prompts), V)
    assert not model.get_output_embeddings()._forward_pre_hooks  # the gather is gone
    for i, p in enumerate(prompts):
        with torch.no_grad():
            want = model(input_ids=torch.tensor([p])).logits[0, -1]
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_rows_of_one_prompt_take_the_models_causal_mask(arch):
    """Prompts too long to share a row: no mask is built (the model's
    causal fast path), and the tokens still equal generate alone; rows
    holding two prompts do get the mask."""
    model = tiny(arch)
    prompts = prompts_of([12, 11, 10, 12])
    assert "attention_mask" not in prefill.forward_inputs(model, plan_batches(prompts)[0])
    got = prefill.generate(model, prompts, max_new_tokens=6)
    assert got == [alone(model, p, 6) for p in prompts]
    assert "attention_mask" in prefill.forward_inputs(model, plan_batches(prompts_of([6, 3, 3]))[0])


def test_generate_changes_when_the_mask_or_positions_are_wrong():
    """The equality above is not vacuous: prefilling the packed rows with
    a plain causal mask, or without restarting positions, changes the
    tokens (the slips a packed prefill can make)."""
    model = tiny("llama")
    prompts = prompts_of(LENGTHS)
    right = prefill.generate(model, prompts, max_new_tokens=6)
    real = prefill._row_mask
    try:
        prefill._row_mask = lambda doc, window=None: real(
            torch.zeros_like(doc), window)  # every prompt one document
        leaky = prefill.generate(model, prompts, max_new_tokens=6, check=False)
    finally:
        prefill._row_mask = real
    assert leaky != right


def test_generate_from_text_with_a_tokenizer():
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(TOKENIZER)
    model = tiny("llama", vocab=len(tok))
    texts = ["def main():", "import os", "The quick brown fox jumps over", "x"]
    got = prefill.generate(model, texts, max_new_tokens=5, tokenizer=tok)
    for text, g in zip(texts, got):
        ids = tok(text)["input_ids"]
        assert g == alone(model, ids, 5)


def test_plan_batches_holds_every_prompt_once_within_the_budget():
    rnd = random.Random(3)
    for _ in range(30):
        lengths = [rnd.randint(0, 40) for _ in range(rnd.randint(1, 60))]
        budget = rnd.randint(40, 200)
        prompts = [[1] * n for n in lengths]
        seen = []
        for b in plan_batches(prompts, max_tokens=budget):
            assert b.tokens <= budget
            pp = b.packed
            for j, i in zip(b.local, b.indices):
                assert int(pp.row[j]) in b.rows and int(pp.length[j]) == lengths[i]
            seen += b.indices
        assert sorted(seen) == [i for i, n in enumerate(lengths) if n]


def test_plan_batches_overlong_prompt_refused_or_alone():
    prompts = [[1] * 5, [1] * 30, [1] * 7]
    with pytest.raises(PrefillError, match=r"prompt 1 has 30 tokens, more than max_tokens=16"):
        plan_batches(prompts, max_tokens=16)
    batches = plan_batches(prompts, max_tokens=16, overlong="alone")
    assert [b.indices for b in batches][-1] == [1]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_tokens"):
            plan_batches(prompts, max_tokens=bad)


def test_bad_prompts_are_named():
    model = tiny("llama", positions=32)
    with pytest.raises(PrefillError, match="prompt 1 is empty"):
        prefill.generate(model, [[3, 4], []], max_new_tokens=4)
    with pytest.raises(PrefillError, match=r"prompt 0 holds token id 97, outside LlamaForCausalLM's vocabulary of 97"):
        prefill.generate(model, [[3, 97]], max_new_tokens=4)
    with pytest.raises(PrefillError, match=r"prompt 2 has 30 tokens \+ 8 to generate, past LlamaForCausalLM's position limit of 32"):
        prefill.generate(model, [[3], [4], [5] * 30], max_new_tokens=8)
    with pytest.raises(PrefillError, match="pass tokenizer="):
        prefill.generate(model, ["text"], max_new_tokens=4)
    with pytest.raises(PrefillError, match="mix text and token ids"):
        prefill.generate(model, ["text", [1, 2]], tokenizer=object(), max_new_tokens=4)


def test_a_tokenizer_larger_than_the_model_is_refused():
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(TOKENIZER)
    model = tiny("llama", vocab=len(tok) - 1)
    with pytest.raises(PrefillError, match=r"tokenizer has \d+ tokens but LlamaForCausalLM embeds"):
        prefill.generate(model, ["abc"], tokenizer=tok)


class MaskBlind(torch.nn.Module):
    """A model whose attention drops the mask and the positions given to
    it: packed prompts would see each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.generation_config = inner.generation_config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        return self.inner(input_ids=input_ids, **kw)


def test_a_model_that_ignores_the_mask_is_refused_by_name():
    blind = MaskBlind(tiny("llama"))
    with pytest.raises(PrefillError, match="MaskBlind does not keep packed prompts apart"):
        prefill.generate(blind, prompts_of([5, 3]))
    with pytest.raises(PrefillError, match="MaskBlind does not keep packed prompts apart"):
        prefill.score(blind, [([3, 4, 5], [6])])


def test_caches_and_attention_it_cannot_fill_are_refused():
    model = tiny("llama")
    model.generation_config.cache_implementation = "static"
    with pytest.raises(PrefillError, match="'static' cache; packed prefill fills a DynamicCache"):
        prefill.generate(model, prompts_of([4]))
    model = tiny("llama")
    model.config._attn_implementation = "paged|sdpa"
    with pytest.raises(PrefillError, match="runs attention 'paged|sdpa'"):
        prefill.generate(model, prompts_of([4]))


def test_flex_block_mask_attends_as_the_dense_mask():
    """The flex form's BlockMask, run through flex_attention (eager: the
    compiled CPU kernel does not build with this torch), gives the
    attention sdpa gives with the dense mask, window or not."""
    from torch.nn.attention.flex_attention import flex_attention
    doc = torch.tensor([[0, 0, 0, 1, 1, 1, 1, -1], [2, 2, 2, 2, 2, 2, 2, 3]])
    q, k, v = (torch.randn(2, 2, 8, 4, generator=torch.Generator().manual_seed(s))
               for s in range(3))
    for window in (None, 3):
        dense = prefill._row_mask(doc, window)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        got = flex_attention(q, k, v, block_mask=prefill._block_mask(dense))
        torch.testing.assert_close(got, want)
    assert not torch.equal(prefill._row_mask(doc, 3), prefill._row_mask(doc))


# --- scoring against lm-evaluation-harness ---------------------------------

def lm_eval_requests(tok, model, n_questions=10, seed=0):
    """Multiple-choice shaped Instances: a context and four continuations,
    one of them the model's own greedy continuation (so is_greedy is true
    for some)."""
    from lm_eval.api.instance import Instance
    rnd = random.Random(seed)
    with open(os.path.join(ROOT, "README.md")) as f:
        words = f.read().split()
    out = []
    for q in range(n_questions):
        ctx = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 45)))
        ids = tok(ctx)["input_ids"]
        greedy = tok.decode(alone(model, ids, 3))
        conts = [greedy] + [" " + " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 5)))
                            for _ in range(3)]
        out += [Instance("loglikelihood", {}, (ctx + (" " if c % 2 else ""), cont), c)
                for c, cont in enumerate(conts)]
    return out


@pytest.fixture(scope="module")
def lm_setup():
    pytest.importorskip("lm_eval")
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(TOKENIZER)
    model = tiny("llama", vocab=len(tok), positions=64)
    model.generation_config.eos_token_id = None
    return tok, model


def test_prepack_hflm_equals_hflm_loglikelihood(lm_setup):
    from lm_eval.models.huggingface import HFLM
    import prepack.lmeval
    tok, model = lm_setup
    reqs = lm_eval_requests(tok, model)
    want = HFLM(pretrained=model, tokenizer=tok, batch_size=4).loglikelihood(reqs)
    lm = prepack.lmeval.PrepackHFLM(pretrained=model, tokenizer=tok, batch_size=4)
    got = lm.loglikelihood(reqs)
    assert [g[1] for g in got] == [w[1] for w in want]
    assert any(w[1] for w in want) and not all(w[1] for w in want)
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-5)
    # some contexts run past max_length 64: cut from the left as HFLM cuts
    assert max(len(tok(r.args[0] + r.args[1])["input_ids"]) for r in reqs) > 65


def test_prepack_hflm_rolling_and_registry(lm_setup):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM
    import prepack.lmeval
    tok, model = lm_setup
    assert get_model("prepack-hf") is prepack.lmeval.PrepackHFLM
    with open(os.path.join(ROOT, "README.md")) as f:
        docs = [f.read()[k * 300:(k + 1) * 300] for k in range(3)]
    reqs = [Instance("loglikelihood_rolling", {}, (d,), k) for k, d in enumerate(docs)]
    want = HFLM(pretrained=model, tokenizer=tok, batch_size=2).loglikelihood_rolling(reqs)
    got = prepack.lmeval.PrepackHFLM(pretrained=model, tokenizer=tok,
                                     max_tokens=256).loglikelihood_rolling(reqs)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_score_from_text_equals_hflm(lm_setup):
    from lm_eval.models.huggingface import HFLM
    tok, model = lm_setup
    reqs = lm_eval_requests(tok, model, n_questions=4, seed=7)
    want = HFLM(pretrained=model, tokenizer=tok, batch_size=3).loglikelihood(reqs)
    got = prefill.score(model, [r.args for r in reqs], tokenizer=tok, max_tokens=100,
                        overlong="alone", max_length=64)
    assert [g[1] for g in got] == [w[1] for w in want]
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-5)


def test_score_bad_requests_are_named():
    model = tiny("llama")
    with pytest.raises(PrefillError, match="request 1 has an empty context"):
        prefill.score(model, [([1], [2]), ([], [2])])
    with pytest.raises(PrefillError, match="request 0 has an empty continuation"):
        prefill.score(model, [([1], [])])
    with pytest.raises(PrefillError, match="request 0 is not a"):
        prefill.score(model, [([1], [2], [3])])


def test_simple_evaluate_runs_a_task_through_prepack_hf(lm_setup, tmp_path):
    """lm-eval end to end: a multiple-choice task defined here (a local
    JSON file: lm-eval's own tasks download data) through
    simple_evaluate, HFLM and PrepackHFLM on the same model: the same
    per-choice loglikelihoods, so the same accuracies."""
    import json
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    import prepack.lmeval
    tok, model = lm_setup
    rnd = random.Random(3)
    with open(os.path.join(ROOT, "README.md")) as f:
        words = f.read().split()
    with open(tmp_path / "mc.jsonl", "w") as f:
        for _ in range(12):
            f.write(json.dumps({
                "question": " ".join(rnd.choice(words) for _ in range(rnd.randint(3, 30))),
                "choices": [" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 4)))
                            for _ in range(4)],
                "answer": rnd.randrange(4)}) + "\n")
    (tmp_path / "mc.yaml").write_text(
        "task: prepack_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'mc.jsonl'}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    tasks = TaskManager(include_path=str(tmp_path))
    runs = {}
    for name, lm in (("hf", HFLM(pretrained=model, tokenizer=tok, batch_size=4)),
                     ("prepack", prepack.lmeval.PrepackHFLM(pretrained=model, tokenizer=tok,
                                                            batch_size=4))):
        runs[name] = evaluator.simple_evaluate(model=lm, tasks=["prepack_mc"], task_manager=tasks,
                                               bootstrap_iters=0, log_samples=True)
    got, want = ([s["resps"] for s in runs[k]["samples"]["prepack_mc"]] for k in ("prepack", "hf"))
    assert len(got) == 12 and all(len(r) == 4 for r in got)
    np.testing.assert_allclose([c[0][0] for r in got for c in r],
                               [c[0][0] for r in want for c in r], rtol=1e-5)
    for metric in ("acc,none", "acc_norm,none"):
        assert runs["prepack"]["results"]["prepack_mc"][metric] == \
            runs["hf"]["results"]["prepack_mc"][metric]
