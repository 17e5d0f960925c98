# The README's training loop: a shard set into a tiny random-weight Llama
# through PackedDataset, with the kwargs Hugging Face's packed (flattened)
# batches carry: input_ids, position_ids (restarting per sequence: that is
# how transformers keeps the sequences apart) and labels; no attention_mask.
# Run after `make demo` (and `pip install .[hf]`):
#   python examples/train_loop.py out
import sys, torch, prepack.torch
from transformers import LlamaConfig, LlamaForCausalLM
ds = prepack.torch.PackedDataset(sys.argv[1], batch_rows=1, form="hf", seed=0)
loader = torch.utils.data.DataLoader(ds, batch_size=None)  # no workers: README.md says why
config = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
model = LlamaForCausalLM(config)  # attn_implementation: sdpa here; eager and flex_attention too
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step, batch in zip(range(3), loader):
    loss = model(**batch, use_cache=False).loss  # no cache: the mask comes from position_ids
    loss.backward(); opt.step(); opt.zero_grad(); print(step, round(loss.item(), 3))
