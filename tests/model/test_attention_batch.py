"""AttentionBatch.to keeps every field (it once dropped has_prefix, back to its default True)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.network.batch import AttentionBatch


def _non_default_batch() -> AttentionBatch:
    """Two sequences (a decode, then a 3-token chunk after 4 cached tokens), every field set to a
    value unlike its default, so a field that `.to` dropped would come back different."""
    return AttentionBatch(
        positions=torch.tensor([5, 4, 5, 6]),
        slot_mapping=torch.tensor([21, 36, 37, 38]),
        cu_seqlens_q=torch.tensor([0, 1, 4], dtype=torch.int32),
        context_lens=torch.tensor([6, 7], dtype=torch.int32),
        block_tables=torch.tensor([[1, 5, -1], [2, 9, -1]], dtype=torch.int32),
        max_q_len=3,
        max_context_len=7,
        mask=MaskSpec(window=4, sinks=1),
        num_decodes=1,
        logits_indices=torch.tensor([0, 3]),
        has_holes=False,
        has_prefix=False,
        num_verify=1,                 # the 3-token row read as a speculative verify row
        verify_q_len=3,
    )


def _same(a, b) -> bool:
    """Field equality: tensors by dtype, shape and values; anything else by ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and torch.equal(a, b))
    return a == b


def _default_of(f: dataclasses.Field):
    """The value a field takes when the constructor is not given it."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def test_fixture_sets_every_defaulted_field_to_a_non_default_value():
    """Guards the test below: a field added with a default must get a non-default value here."""
    batch = _non_default_batch()
    assert not batch.mask.is_dense
    for f in dataclasses.fields(AttentionBatch):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            continue
        assert not _same(getattr(batch, f.name), _default_of(f)), f"{f.name} is at its default"


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "device"])
def test_to_keeps_every_field(device):
    """Every dataclass field survives .to(), tensors land on the device, the original is intact."""
    batch = _non_default_batch()
    moved = batch.to(device)
    assert moved is not batch
    for f in dataclasses.fields(AttentionBatch):
        before, after = getattr(batch, f.name), getattr(moved, f.name)
        assert _same(before, after), f"AttentionBatch.to changed {f.name}: {before!r} -> {after!r}"
        if isinstance(after, torch.Tensor):
            assert after.device.type == "cpu"
    assert moved.num_seqs == batch.num_seqs and moved.num_tokens == batch.num_tokens


def test_to_keeps_unset_logits_indices_none():
    """logits_indices=None (every sequence's last token) is not a tensor to move: it stays None."""
    batch = dataclasses.replace(_non_default_batch(), logits_indices=None)
    assert batch.to("cpu").logits_indices is None
