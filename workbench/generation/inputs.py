"""Model inputs: where they go, a left-padded batch, and what its prefill attends to.
"""

from __future__ import annotations


def input_device(model):
    """Where the model's inputs go: the embedding's device (the first of several with device_map)."""
    return model.get_input_embeddings().weight.device


def left_pad(ids: list[list[int]], pad_id: int):
    """[B, T] input ids and attention mask, padded on the left as the card's tokenizer does."""
    import torch

    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, seq in enumerate(ids):
        input_ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq):] = 1
    return input_ids, mask


def prefill_mask(attention_mask, keys: int, dtype):
    """For the prefill of a left-padded batch (its [B, T] 0/1 mask) against `keys` cache positions
    (the prompt's own T, or a whole static cache): the additive attention mask [B, 1, T, keys] and
    the rotary positions [B, T]. A query sees the valid keys at or before it; a padding query sees
    itself only (never an empty row); padding gets position 1, as transformers gives it."""
    import torch

    valid = attention_mask.bool()  # [B, T]
    b, t = valid.shape
    k = torch.arange(keys, device=valid.device)
    q = torch.arange(t, device=valid.device)
    seen = torch.zeros((b, keys), dtype=torch.bool, device=valid.device)  # [B, keys]
    seen[:, :t] = valid
    allowed = ((k[None, None, :] <= q[None, :, None]) & seen[:, None, :]) | (k[None, None, :] == q[None, :, None])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill_(~allowed, torch.finfo(dtype).min)
    positions = (valid.long().cumsum(-1) - 1).masked_fill_(~valid, 1)
    return mask[:, None], positions
