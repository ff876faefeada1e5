"""Decode steps as CUDA graphs: one captured graph per batch-size bucket (and attention mask).

What it does: a decode step (every sequence brings exactly one new token) launches hundreds of
small kernels; at batch 1 the launch gaps, not the GPU, set the speed. `DecodeGraphRunner`
captures `model.forward` + `model.compute_logits` once per bucket size (1, 2, 4, 8, 16, 32, ...)
over static input buffers, then each step copies the batch into those buffers (device-to-device,
no host sync) and replays the smallest bucket that holds the batch. Padding rows get slot -1
(no K/V write) and context length 0 (no keys read), so they never touch the cache.

The kernels' grids and split counts depend only on host ints, which are fixed at capture: the
batch size (the bucket) and max_context_len (captured at the cache's largest block table,
`max_blocks * block_size`); the real lengths are read from device memory at replay.

How the engine uses it (model/engine/engine.py, CUDA only):
    runner = DecodeGraphRunner(model, kv, max_num_seqs=cfg.max_num_seqs,
                               max_blocks_per_seq=ceil(max_model_len / block_size))
    ...in a step whose batch is all decodes (batch.num_decodes == batch.num_seqs):
    if runner.can_run(batch):
        logits = runner.run(input_ids, batch)      # (B, V) float32, rows = sequences in order
    else: eager forward + compute_logits as before (prefill, mixed batches, CPU).
The returned logits are a view of a static buffer: consume (sample) them before the next run.
What it does not do: prefill (eager), sampling, or choosing which steps are decodes.
"""
from __future__ import annotations

import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.kv_cache import KVCache

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class DecodeGraphRunner:
    """Captured decode-step CUDA graphs, one per (batch-size bucket, mask), over static buffers."""
    def __init__(self, model, kv: KVCache, max_num_seqs: int, max_blocks_per_seq: int,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> None:
        if kv.device.type != "cuda":
            raise ValueError("DecodeGraphRunner needs the model and KV cache on a CUDA device")
        self.model, self.kv = model, kv
        self.buckets = tuple(sorted({b for b in buckets if b < max_num_seqs} | {max_num_seqs}))
        self.max_bs = self.buckets[-1]
        self.max_blocks = max_blocks_per_seq
        self.max_context_len = max_blocks_per_seq * kv.block_size
        dev, n = kv.device, self.max_bs
        # Static inputs of the largest bucket; each bucket's graph reads the first rows.
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=dev)          # (N,)
        self.positions = torch.zeros(n, dtype=torch.int64, device=dev)          # (N,)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int64, device=dev)  # (N,)
        self.cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device=dev)    # (N+1,)
        self.context_lens = torch.zeros(n, dtype=torch.int32, device=dev)       # (N,)
        self.block_tables = torch.full((n, max_blocks_per_seq), -1, dtype=torch.int32, device=dev)
        self.graphs: dict[tuple[int, MaskSpec], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()

    # ------------------------------------------------------------------------------------------
    def bucket_for(self, num_seqs: int) -> int | None:
        """The smallest bucket that holds `num_seqs` sequences, or None when none does."""
        return next((b for b in self.buckets if b >= num_seqs), None)

    def can_run(self, batch: AttentionBatch) -> bool:
        """True when `batch` is all one-token decodes within a bucket and the captured lengths."""
        return (batch.num_decodes == batch.num_seqs and batch.max_q_len == 1
                and self.bucket_for(batch.num_seqs) is not None
                and batch.block_tables.shape[1] <= self.max_blocks
                and batch.max_context_len <= self.max_context_len)

    def _static_batch(self, bs: int, mask: MaskSpec) -> AttentionBatch:
        return AttentionBatch(
            positions=self.positions[:bs], slot_mapping=self.slot_mapping[:bs],
            cu_seqlens_q=self.cu_seqlens[:bs + 1], context_lens=self.context_lens[:bs],
            block_tables=self.block_tables[:bs], max_q_len=1,
            max_context_len=self.max_context_len, mask=mask, num_decodes=bs, logits_indices=None)

    @torch.inference_mode()
    def capture(self, bs: int, mask: MaskSpec) -> None:
        """Capture the decode step of bucket `bs` (warm-up run first: compiles the kernels)."""
        batch = self._static_batch(bs, mask)
        # The warm-up runs execute for real: make them write no K/V and read no keys, whatever
        # the buffers held from the last replay (a capture can happen mid-run, for a new mask).
        self.slot_mapping.fill_(-1)
        self.context_lens.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.model.compute_logits(self.model(self.input_ids[:bs], batch, self.kv))
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self.model.compute_logits(self.model(self.input_ids[:bs], batch, self.kv))
        self.graphs[(bs, mask)] = (graph, logits)

    def capture_all(self, mask: MaskSpec) -> None:
        """Capture every bucket not yet captured for `mask`, largest first."""
        for bs in reversed(self.buckets):   # largest first: later graphs reuse its pool memory
            if (bs, mask) not in self.graphs:
                self.capture(bs, mask)

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        """input_ids (B,) and a pure-decode batch -> logits (B, V) float32 (a static view)."""
        B = batch.num_seqs
        bs = self.bucket_for(B)
        if bs is None or not self.can_run(batch):
            raise ValueError(f"DecodeGraphRunner cannot run this batch ({B} sequences, "
                             f"max_q_len {batch.max_q_len}); use the eager forward")
        key = (bs, batch.mask)
        if key not in self.graphs:
            self.capture(bs, batch.mask)
        w = batch.block_tables.shape[1]
        self.input_ids[:B].copy_(input_ids, non_blocking=True)
        self.positions[:B].copy_(batch.positions, non_blocking=True)
        self.slot_mapping[:B].copy_(batch.slot_mapping, non_blocking=True)
        self.context_lens[:B].copy_(batch.context_lens, non_blocking=True)
        self.block_tables[:B, :w].copy_(batch.block_tables, non_blocking=True)
        if bs > B:   # padding rows: no write, no keys
            self.slot_mapping[B:bs].fill_(-1)
            self.context_lens[B:bs].fill_(0)
        graph, logits = self.graphs[key]
        graph.replay()
        return logits[:B]
