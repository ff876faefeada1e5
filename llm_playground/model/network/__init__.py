"""The network: a Llama-architecture causal LM over a packed batch and the paged KV cache.

What it does: hyper-parameters (`config`), RoPE tables (`rope`), one decoder layer (`layers`),
the causal LM with its weight filling and attention-probability probe (`llama`), the plain
linear projection (`linear`) and the weight-only quantised one (`quant_linear`: int8 / int4 /
GGUF blocks, Triton on CUDA, torch's int ops on CPU), the per-step batch description the
kernels read (`batch`), the KV block pool (`kv_cache`) and the weight names and shapes every
reader must produce (`weight_contract`).
What it does not do: read files (model/weights), decide which tokens run or where their K/V go
(model/engine), sample, or know about requests. Everything here is tensors in, tensors out.
"""
