"""The two communicating wrappers of tensor parallelism, and the clock of their collectives.

- `RowParallel(inner, group, timer)`: the o_proj / down_proj of one rank (its columns of the
  full matrix, i.e. a row-parallel layer in Megatron's terms). Its output is this rank's partial
  sum (T, H); one all-reduce makes it the full projection on every rank. One per block half.
- `VocabParallelHead(inner, vocab_size, group, timer)`: the LM head's rows for this rank's
  slice of the vocabulary: local logits (N, V / world), then one all_gather so every rank has
  the full (N, V) row (all ranks sample the same ids from it with the same generators, so a
  decode whose input is still on the device, overlap scheduling, finds it on every rank).
- `CommTimer`: the time spent in those collectives, per step. On the CPU (gloo, synchronous)
  it is wall time around the call; on CUDA a pair of events per call, read when the step is
  collected (the events are done by then), so timing adds no sync.

The wrappers expose `weight` (the inner shard) so the code that reads a projection's weight
(the fused decode kernels, quantisation) sees the shard; `reduces_output = True` tells
LlamaDecoderLayer not to fold the down projection into a fused kernel that would skip the
all-reduce (model/network/layers.py, one condition). They do not slice weights (tp_shard.py).
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn


class CommTimer:
    """Seconds spent in tensor-parallel collectives since the last `take`, and how many ran."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.calls = 0

    def run(self, fn, *args, **kwargs) -> None:
        """Call the collective `fn(*args, **kwargs)`, timing it."""
        self.calls += 1
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            self._events.append((start, end))
            return
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        self._seconds += time.perf_counter() - t0

    def take(self) -> tuple[float, int]:
        """(seconds, calls) since the last take, then reset. On CUDA this waits for the last
        event (call it after the step's results were collected: they already are done)."""
        seconds, calls = self._seconds, self.calls
        for start, end in self._events:
            end.synchronize()
            seconds += start.elapsed_time(end) / 1000.0
        self._seconds, self._events, self.calls = 0.0, [], 0
        return seconds, calls


class RowParallel(nn.Module):
    """A row-parallel projection: the inner Linear on this rank's input columns, then one
    all-reduce (sum) of the (T, H) partial output over the group."""
    reduces_output = True

    def __init__(self, inner: nn.Module, group, timer: CommTimer) -> None:
        super().__init__()
        self.inner = inner
        self.group = group
        self.timer = timer

    @property
    def weight(self) -> torch.Tensor:
        """The inner projection's weight: this rank's columns (out, in / world)."""
        return self.inner.weight

    @property
    def out_features(self) -> int:
        """Output width (the full hidden size: the partial sums have it)."""
        return int(self.inner.weight.shape[0])

    def quantize(self, act_dtype: torch.dtype = torch.bfloat16, pack=None) -> None:
        """Quantise the inner shard (`pack`: see `quantized`; default int8 per output row)."""
        self.inner = quantized(self.inner, act_dtype, pack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:     # (T, in / world) -> (T, out)
        """This rank's partial projection, summed over all ranks."""
        y = self.inner(x)
        if not y.is_contiguous():
            y = y.contiguous()
        self.timer.run(dist.all_reduce, y, group=self.group)
        return y


class VocabParallelHead(nn.Module):
    """The LM head over this rank's vocabulary rows; forward gathers the full logits rows."""

    def __init__(self, inner: nn.Module, vocab_size: int, world: int, group,
                 timer: CommTimer) -> None:
        super().__init__()
        self.inner = inner                 # (ceil(V / world), H), zero rows past V
        self.vocab_size = vocab_size
        self.world = world
        self.group = group
        self.timer = timer

    @property
    def weight(self) -> torch.Tensor:
        """This rank's rows of the head (V / world, H)."""
        return self.inner.weight

    def quantize(self, act_dtype: torch.dtype = torch.bfloat16, pack=None) -> None:
        """Quantise the inner shard (`pack`: see `quantized`; default int8 per output row)."""
        self.inner = quantized(self.inner, act_dtype, pack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:     # (N, H) -> (N, V)
        """Local logits (N, V / world), all-gathered and concatenated in rank order."""
        local = self.inner(x).contiguous()                                   # (N, V / world)
        parts = [torch.empty_like(local) for _ in range(self.world)]
        self.timer.run(dist.all_gather, parts, local, group=self.group)
        return torch.cat(parts, dim=-1)[:, :self.vocab_size]                 # (N, V)


def quantized(linear: nn.Module, act_dtype: torch.dtype, pack=None) -> nn.Module:
    """A QuantLinear (model/network/quant_linear.py) holding `linear`'s shard packed by
    `pack(float (out, in)) -> PackedWeight` (kernels/quant_layout.py); None = weight-only int8,
    one scale per output row (what the single-rank loader makes of --weights int8)."""
    from llm_playground.kernels.quant_layout import quantize_int8
    from llm_playground.model.network.quant_linear import QuantLinear
    w = linear.weight                                                      # (out, in) float
    packed = pack(w.float()) if pack is not None else quantize_int8(w.float(), None)
    return QuantLinear(packed, act_dtype, w.device)
