"""Does a model keep packed sequences apart? One call to find out.

Packed training corrupts silently when a model or kernel ignores the
boundaries between the sequences of a row: a kernel that drops the mask, an
attention path that stops deriving the block-diagonal mask from
position_ids (in transformers, passing a 2-D all-ones attention_mask does
that). check_isolation runs the model on the packed batch and on each
sequence alone and compares the outputs token for token.

    from prepack.isolation import check_isolation
    report = check_isolation(model, [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    assert not report.leaks, report
"""

from dataclasses import dataclass, field

import numpy as np

from . import _optional
from ._collate import collate


@dataclass
class IsolationReport:
    """What check_isolation found. max_diff: the largest absolute
    difference between a token's packed and alone outputs; scale: the
    largest absolute output alone; leaks: max_diff > rtol * scale.
    per_sequence: the largest difference of each sequence, in order."""
    max_diff: float
    scale: float
    rtol: float
    leaks: bool
    per_sequence: list = field(default_factory=list)

    def __str__(self):
        verdict = "documents LEAK into each other" if self.leaks else \
            "sequences kept apart"
        worst = int(np.argmax(self.per_sequence)) if self.per_sequence else -1
        return (f"{verdict}: largest difference {self.max_diff:.3g} "
                f"({self.max_diff / self.scale if self.scale else 0:.3g} of "
                f"the largest output, tolerance {self.rtol:g}; worst: "
                f"sequence {worst})")


def _outputs(result):
    """The tensor a forward returned: .logits, [0] of a tuple, or itself."""
    if hasattr(result, "logits"):
        return result.logits
    if isinstance(result, (tuple, list)):
        return result[0]
    return result


def _one_row(sequences):
    """All the sequences in one row, as ShardSet rows are."""
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    lengths = [len(s) for s in sequences]
    if min(lengths, default=0) == 0:
        raise ValueError("check_isolation: every sequence needs a token")
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return {"input_ids": ids, "cu_seqlens": cu,
            "seq_ids": np.arange(len(sequences), dtype=np.uint64)}


def check_isolation(model, sequences, form="hf", rtol=1e-5,
                    packed_kwargs=None, alone_kwargs=None):
    """Runs `model` (a torch module taking input_ids; a transformers causal
    LM or anything shaped like one) on `sequences` packed into one row and
    on each sequence alone, in eval mode without gradients, and compares.

    form="hf": the packed forward gets what collate(form="hf") gives a
        transformers model: input_ids and position_ids [1, T] (no
        attention_mask) and use_cache=False.
    form="padded": input_ids [1, T] and the [1, 1, T, T] block-diagonal
        causal mask as attention_mask (boolean), position_ids, and
        use_cache=False.
    packed_kwargs / alone_kwargs: extra keyword arguments for the packed
    forward / each lone forward (use_cache=False is passed to both unless
    overridden; pass {"use_cache": None} to drop it for a model that does
    not take it).

    Returns an IsolationReport; report.leaks is True when some token's
    output differs by more than rtol times the largest output."""
    torch = _optional.require("torch", "torch", "check_isolation")

    if form not in ("hf", "padded"):
        raise ValueError(f"form must be 'hf' or 'padded', not {form!r}")
    row = _one_row(sequences)
    if form == "hf":
        batch = collate([row], "hf", tensors="pt")
        kwargs = {"input_ids": batch["input_ids"],
                  "position_ids": batch["position_ids"]}
    else:
        batch = collate([row], "padded", tensors="pt", mask_4d=True)
        kwargs = {"input_ids": batch["input_ids"],
                  "position_ids": batch["position_ids"],
                  "attention_mask": batch["mask_4d"]}
    packed_extra = {"use_cache": False, **(packed_kwargs or {})}
    alone_extra = {"use_cache": False, **(alone_kwargs or {})}
    kwargs.update({k: v for k, v in packed_extra.items() if v is not None})
    alone_extra = {k: v for k, v in alone_extra.items() if v is not None}
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            packed = _outputs(model(**kwargs))[0]
            cu = row["cu_seqlens"]
            per, scale = [], 0.0
            for i, s in enumerate(sequences):
                ids = torch.as_tensor(np.asarray(s, dtype=np.int64))[None]
                alone = _outputs(model(input_ids=ids, **alone_extra))[0]
                part = packed[int(cu[i]):int(cu[i + 1])]
                per.append(float((part.float() - alone.float()).abs().max()))
                scale = max(scale, float(alone.float().abs().max()))
    finally:
        if was_training:
            model.train()
    worst = max(per)
    return IsolationReport(max_diff=worst, scale=scale, rtol=rtol,
                           leaks=worst > rtol * max(scale, 1e-30),
                           per_sequence=per)
