"""Model inputs: where they go, and a left-padded batch.
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
