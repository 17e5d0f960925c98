# The README's training loop: a shard set into a model, with the kwargs
# Hugging Face's packed (flattened) batches carry. Run after `make demo`:
#   PYTHONPATH=python /usr/bin/python3 examples/train_loop.py out
import sys, torch, prepack.torch
ds = prepack.torch.PackedDataset(sys.argv[1], batch_rows=1, form="hf", seed=0)
loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
model = torch.nn.Sequential(torch.nn.Embedding(50257, 32), torch.nn.Linear(32, 50257))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step, batch in zip(range(3), loader):  # with a transformers model: model(**batch)
    logits = model(batch["input_ids"])[:, :-1]  # position_ids restart per sequence
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten())
    loss.backward(); opt.step(); opt.zero_grad(); print(step, round(loss.item(), 3))
