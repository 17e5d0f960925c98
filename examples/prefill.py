# Prepacking a batch of prompts for prefill (docs/PREFILL.md).
#   python examples/prefill.py   (after `pip install .`; from a build tree:
#   PREPACK_LIBRARY=build/libprepack.so PYTHONPATH=python .venv/bin/python ...)
import math, torch
from prepack.prefill import pack_prompts

torch.manual_seed(0)
prompts = [[5, 6, 7, 8, 9, 10, 11], [1, 2, 3], [20, 21, 22, 23, 24, 25], [4, 4]]
pp = pack_prompts(prompts).to_torch()          # rows of capacity 7 (the longest)
print(f"{len(prompts)} prompts -> {pp.rows} rows of {pp.capacity}")

emb, pos = torch.nn.Embedding(32, 16), torch.nn.Embedding(8, 16)
wq, wk, wv = (torch.nn.Linear(16, 16) for _ in range(3))
head = torch.nn.Linear(16, 32)
x = emb(pp.input_ids) + pos(pp.position_ids)   # positions restart per prompt
q, k, v = wq(x), wk(x), wv(x)                   # k, v: the KV cache [R, C, 16]
scores = (q @ k.transpose(-1, -2) / math.sqrt(16)).masked_fill(~pp.attention_mask_4d[:, 0], -1e9)
logits = head(x + torch.softmax(scores, -1) @ v)

last = pp.last_token_logits(logits)             # [4, 32], in input order
caches = pp.unpack(k, dim=1)                    # per prompt: [length, 16]
batch, mask = pp.to_left_padded(caches, dim=0)  # [4, 7, 16] and [4, 7], for decoding
print("next tokens:", last.argmax(-1).tolist())
print("left-padded KV:", tuple(batch.shape), "mask rows:", mask.sum(1).tolist())
