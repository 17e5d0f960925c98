"""The DataLoader trap: prepack's torch datasets yield whole batches, so a
DataLoader must be given batch_size=None. With its default batch_size=1
torch's default_collate would stack one batch into [1, 1, L] tensors in
silence, and with batch_size=2 fail to stack varlen batches. The datasets
yield PackedBatch (a dict), which default_collate refuses with the
message saying so: the class is registered in torch's
default_collate_fn_map, the extension point its docstring gives.
batch_size=None never calls default_collate (only default_convert,
which keeps the dict), nor does a collate_fn of the user's own."""


class PackedBatch(dict):
    """One whole batch from PackedDataset or StreamingPackedDataset: a
    dict of the collated form's fields."""


def refuse_collate(batch, *, collate_fn_map=None):
    """default_collate's handler for PackedBatch: a ValueError saying to
    pass batch_size=None."""
    first = batch[0] if len(batch) else {}
    ids = first.get("input_ids") if hasattr(first, "get") else None
    shape = tuple(getattr(ids, "shape", ()))
    raise ValueError(
        f"prepack's datasets yield whole batches (here input_ids "
        f"{list(shape)}): give the DataLoader batch_size=None, as in "
        f"DataLoader(dataset, batch_size=None, num_workers=...), and set "
        f"a batch's rows with the dataset's batch_rows (batch_size="
        f"{len(batch)} would stack {len(batch)} of them into one)")


def guard(torch_collate):
    """Registers refuse_collate for PackedBatch in the module
    torch.utils.data._utils.collate (passed in: imported by the caller
    through prepack._optional)."""
    table = getattr(torch_collate, "default_collate_fn_map", None)
    if table is not None:
        table[PackedBatch] = refuse_collate
