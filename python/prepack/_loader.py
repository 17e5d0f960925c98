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

    def __copy__(self):
        # the DataLoader's default_convert copies each batch: the generic
        # copy.copy of a dict subclass costs several times this
        clone = type(self)(self)
        clone.__dict__.update(self.__dict__)
        return clone


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


def read_ahead(make, items, depth):
    """make(item) for each item, in order, computed up to `depth` items
    ahead in one thread while the caller consumes: the C reader's calls
    release the GIL (ctypes), so decompressing and building the next
    batch overlaps the training loop's Python and the DataLoader's. depth
    0 computes each in the caller's thread. An exception from make is
    raised here, at its item; closing the generator early stops the
    thread before it returns, so nothing reads on behind the caller."""
    if depth <= 0:
        for item in items:
            yield make(item)
        return
    import queue
    import threading
    done = object()
    ready = queue.Queue()
    # a slot taken before each make and given back as the caller takes its
    # item: at most `depth` built and not consumed (a Queue(maxsize=depth)
    # alone lets one more be built while the queue is full)
    slots = threading.Semaphore(depth)
    stop = threading.Event()

    def claim():  # False once the consumer has gone
        while not stop.is_set():
            if slots.acquire(timeout=0.05):
                return not stop.is_set()
        return False

    def produce():
        try:
            for item in items:
                if not claim():
                    return
                ready.put((True, make(item)))
        except BaseException as e:  # raised in the consumer, at its item
            ready.put((False, e))
            return
        ready.put((True, done))

    worker = threading.Thread(target=produce, name="prepack-read-ahead",
                              daemon=True)
    worker.start()
    try:
        while True:
            ok, value = ready.get()
            slots.release()
            if not ok:
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        # closed by the garbage collector in the thread itself (make
        # allocates): the thread stops on its own at its next claim
        if worker is not threading.current_thread():
            worker.join()
