"""Prepacked prefill equals prefilling each prompt alone and a left-padded
batch, and greedy decoding after it produces the padded baseline's tokens.
A small decoder-only transformer with random weights, on CPU."""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import prepack  # noqa: E402
from prepack.prefill import pack_prompts  # noqa: E402

VOCAB = 512


def needs_library():
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("PREPACK_LIBRARY not set (sanitizer builds cannot be loaded)")


class Decoder(torch.nn.Module):
    """Token and learned position embeddings (indexed by position_ids), two
    layers of two-head masked softmax attention and an MLP, a head. Returns
    logits and the per-layer (K, V) caches, [B, H, T, D]."""

    def __init__(self, d=32, heads=2, layers=2, max_pos=512):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.tok = torch.nn.Embedding(VOCAB, d)
        self.pos = torch.nn.Embedding(max_pos, d)
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(d, 3 * d) for _ in range(layers))
        self.out = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(layers))
        self.mlp = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(),
                                torch.nn.Linear(2 * d, d)) for _ in range(layers))
        self.head = torch.nn.Linear(d, VOCAB)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.hd).transpose(1, 2)

    def forward(self, ids, pos, mask, past=None):
        """mask: bool [B, 1, T, past + T], True = may attend."""
        x = self.tok(ids % VOCAB) + self.pos(pos)
        caches = []
        for i, (qkv, out, mlp) in enumerate(zip(self.qkv, self.out, self.mlp)):
            q, k, v = (self.split(t) for t in qkv(x).chunk(3, dim=-1))
            if past is not None:
                k = torch.cat([past[i][0], k], dim=2)
                v = torch.cat([past[i][1], v], dim=2)
            caches.append((k, v))
            s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
            a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v
            a = torch.nan_to_num(a)  # rows of padding attend to nothing
            x = x + out(a.transpose(1, 2).reshape(x.shape))
            x = x + mlp(x)
        return self.head(x), caches


@pytest.fixture(scope="module")
def prompts(corpus):
    """16 prompts with lengths drawn from the bundled corpus, capped at 200."""
    rng = np.random.default_rng(4)
    picks = rng.choice(len(corpus), 16, replace=False)
    return [corpus[i][:200] for i in picks if corpus[i]]


def left_padded(prompts, dtype):
    """The baseline: a left-padded batch, positions 0.. on real tokens."""
    n, longest = len(prompts), max(map(len, prompts))
    ids = torch.zeros(n, longest, dtype=torch.long)
    pos = torch.zeros(n, longest, dtype=torch.long)
    real = torch.zeros(n, longest, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p)
        pos[i, longest - len(p):] = torch.arange(len(p))
        real[i, longest - len(p):] = True
    causal = torch.ones(longest, longest, dtype=torch.bool).tril()
    mask = (causal[None] & real[:, None, :] & real[:, :, None])[:, None]
    return ids, pos, mask, real


@torch.no_grad()
def test_last_token_logits_equal(prompts):
    needs_library()
    torch.manual_seed(0)
    model = Decoder().eval()
    pp = pack_prompts(prompts).to_torch()
    assert pp.capacity == max(map(len, prompts))
    logits, _ = model(pp.input_ids, pp.position_ids, pp.attention_mask_4d)
    packed = pp.last_token_logits(logits)
    assert packed.shape == (len(prompts), VOCAB)
    ids, pos, mask, _ = left_padded(prompts, torch.float32)
    padded = model(ids, pos, mask)[0][:, -1]
    for i, p in enumerate(prompts):
        alone = model(torch.tensor([p]), torch.arange(len(p))[None],
                      torch.ones(len(p), len(p), dtype=torch.bool).tril()[None, None])[0]
        assert torch.allclose(packed[i], alone[0, -1], atol=1e-4)
        assert torch.allclose(padded[i], alone[0, -1], atol=1e-4)
    # numpy logits work the same way
    assert np.allclose(pp.last_token_logits(logits.numpy()), packed.numpy())


def greedy(model, caches, real, last_logits, lengths, steps=16):
    """Greedy decoding from a left-padded cache: real marks cache slots."""
    out, seen = [], []
    token = last_logits.argmax(-1)
    pos = torch.tensor(lengths)
    for _ in range(steps):
        out.append(token)
        real = torch.cat([real, torch.ones(len(lengths), 1, dtype=torch.bool)], 1)
        logits, caches = model(token[:, None], pos[:, None], real[:, None, None, :],
                               past=caches)
        seen.append(logits[:, -1])
        token = logits[:, -1].argmax(-1)
        pos = pos + 1
    return torch.stack(out, 1), torch.stack(seen, 1)


@torch.no_grad()
def test_greedy_generation_matches_padded_baseline(prompts):
    needs_library()
    torch.manual_seed(1)
    model = Decoder().double().eval()
    lengths = [len(p) for p in prompts]
    # baseline: prefill the left-padded batch, decode
    ids, pos, mask, real = left_padded(prompts, torch.float64)
    logits, caches = model(ids, pos, mask)
    want, want_logits = greedy(model, caches, real, logits[:, -1], lengths)
    # prepacked: one prefill over the rows, caches unpacked and left-padded
    pp = pack_prompts(prompts).to_torch()
    logits, packed = model(pp.input_ids, pp.position_ids, pp.attention_mask_4d)
    caches = []
    for k, v in packed:  # [R, H, C, D] each
        ks, kmask = pp.to_left_padded(pp.unpack(k, dim=2), dim=1)
        vs, _ = pp.to_left_padded(pp.unpack(v, dim=2), dim=1)
        caches.append((ks, vs))
    got, got_logits = greedy(model, caches, kmask.bool(),
                             pp.last_token_logits(logits), lengths)
    assert torch.equal(got, want)  # the same tokens for every prompt
    # and the same logits at every step: the unpacked caches are the same
    assert torch.allclose(got_logits, want_logits, atol=1e-9)


def test_algo_reaches_the_planner():
    """Lengths 5 3 8 1 4 at capacity 10: first fit puts the 1 beside the 8,
    best fit beside the 5 and 4; next fit keeps input order."""
    needs_library()
    prompts = [[7] * n for n in (5, 3, 8, 1, 4)]
    want = {"ffd": [[2, 3], [0, 4], [1]], "bfd": [[2], [0, 4, 3], [1]],
            "nextfit": [[0, 1], [2, 3], [4]]}
    for algo, rows in want.items():
        pp = pack_prompts(prompts, capacity=10, algo=algo)
        got = [[i for i in range(5) if pp.row[i] == r] for r in range(pp.rows)]
        assert sorted(map(sorted, got)) == sorted(map(sorted, rows)), algo
    assert pack_prompts(prompts, capacity=10).rows == 3  # bfd by default
    with pytest.raises(ValueError, match="algo"):
        pack_prompts(prompts, algo="worst")


def test_errors():
    needs_library()
    with pytest.raises(ValueError, match="empty"):
        pack_prompts([[1, 2], []])
    with pytest.raises(ValueError, match="more than max_seq_len"):
        pack_prompts([[1] * 10], capacity=4)
    # uint32 fields: 2**32 + 16 packed rows of 16, pad_id -1 padded with
    # 2**32 - 1, until they were refused
    for bad in (dict(capacity=2**32 + 16), dict(pad_id=-1),
                dict(pad_id=2**32)):
        with pytest.raises(ValueError, match="must be an integer in"):
            pack_prompts([[1] * 10, [2] * 6], **bad)


def test_docs_example_runs():
    """examples/prefill.py, the example in docs/PREFILL.md."""
    needs_library()
    import subprocess
    import sys
    from conftest import ROOT
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "prefill.py")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "4 prompts -> 3 rows of 7" in run.stdout
    assert "mask rows: [7, 3, 6, 2]" in run.stdout
