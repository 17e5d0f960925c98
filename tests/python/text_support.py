"""What the text tests share: the ChatML template with {% generation %}
markers they give their tokenizers, and a set's sequences read back."""
import numpy as np

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def rows_by_sequence(out):
    """seq_id -> (input_ids, loss_mask) over the rows of the set in out."""
    from prepack import ShardSet
    got = {}
    for row in ShardSet(out):
        cu = row["cu_seqlens"]
        for k, sid in enumerate(row["seq_ids"]):
            a, b = int(cu[k]), int(cu[k + 1])
            mask = row["loss_mask"][a:b] if "loss_mask" in row else \
                np.ones(b - a, np.uint8)
            got[int(sid)] = (row["input_ids"][a:b].tolist(), mask.tolist())
    return got
