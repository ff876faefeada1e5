"""`load_model`: one entry point from a path (GGUF file or Hugging Face directory) to a model.

Picks the reader by what the path is (a directory -> model/weights/hf_folder.py, a file starting with
the GGUF magic -> model/weights/gguf_file.py; None -> the default model), resolves the dtype policy,
builds `LlamaForCausalLM` and fills it. A GGUF file is parsed once: the same reader gives the
config, the weights and the tokenizer. Two callbacks report progress: `progress(message)` names
each stage as it starts, and `fraction(f)` says how much of the weights' work is done
(0 < f <= 1, never decreasing, ending at 1.0: elements dequantized and copied, then, for int8,
elements quantized). Every failure is a `ModelLoadError` with a one-line message. It does not
size the KV cache or start an engine.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from llm_playground.model.weights import gguf_file, hf_folder
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.llama import LlamaForCausalLM
from llm_playground.model.network.weight_contract import ModelLoadError, expected_shapes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "int8": weight-only int8 projections with bfloat16 activations and KV cache (CPU speed mode).
WEIGHT_FORMATS = (*DTYPES, "int8")
CPU_DEFAULT = "int8"      # measured fastest CPU decode (see docs / report); float32 is the exact mode
CUDA_DEFAULT = "bfloat16"


@dataclass
class LoadedModel:
    """A loaded model and what goes with it: its config, tokenizer, chat template, name, path,
    activation dtype, device and weight format."""
    model: LlamaForCausalLM
    config: ModelConfig
    tokenizer: object                # bpe.Tokenizer
    chat_template: str | None
    name: str
    path: Path
    dtype: torch.dtype               # activations and KV cache
    device: torch.device
    weight_format: str = ""          # float32 | bfloat16 | float16 | int8
    device_choice: str = ""          # how the device was chosen: "" named by the caller, else "auto, ..."


def resolve_device(device: str | None) -> tuple[torch.device, str]:
    """(device, how it was chosen) for --device: None or "auto" = the first CUDA device when
    torch sees one, else the CPU; "cpu"; "cuda" / "cuda:N" (checked: a machine without CUDA, or
    with fewer devices, gets a one-line ModelLoadError saying what to pass instead)."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device()), "auto"
        return torch.device("cpu"), "auto, no CUDA device"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ModelLoadError(f"unknown device {device!r} ({str(e).splitlines()[0]}); pass cpu or "
                             f"cuda[:N], or leave --device out to use CUDA when there is one") from None
    if dev.type == "cpu":
        return dev, ""
    if dev.type != "cuda":
        raise ModelLoadError(f"device {device!r} is not supported (cpu or cuda[:N])")
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "torch sees no CUDA GPU")
        raise ModelLoadError(f"device {device!r}: there is no CUDA device on this machine ({why}); "
                             f"pass --device cpu, or leave --device out to pick one automatically")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise ModelLoadError(f"device {device!r}: this machine has {count} CUDA device"
                             f"{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index), ""


def resolve_dtype(dtype: str | None, device: torch.device) -> tuple[str, torch.dtype]:
    """(weight format, activation dtype) from the user's --dtype (None = the device's default)."""
    fmt = dtype or (CUDA_DEFAULT if device.type == "cuda" else CPU_DEFAULT)
    if fmt not in WEIGHT_FORMATS:
        raise ModelLoadError(f"unknown dtype {fmt!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    if fmt == "int8":
        from llm_playground.model.network.linear import int8_supported
        if device.type != "cpu" or not int8_supported():
            if dtype == "int8":
                raise ModelLoadError("dtype int8 needs torch's CPU int8 matmul on a CPU device")
            fmt = "bfloat16"
        return fmt, torch.bfloat16
    return fmt, DTYPES[fmt]


def build_model(cfg: ModelConfig, get: Callable[[str], torch.Tensor], weight_format: str,
                act_dtype: torch.dtype, device: torch.device,
                fraction: Callable[[float], None] | None = None) -> LlamaForCausalLM:
    """A LlamaForCausalLM filled from `get`, int8-quantized when asked, in eval mode.
    `fraction(f)` after each tensor read and each matrix quantized (see the module docstring)."""
    model = LlamaForCausalLM(cfg, act_dtype, device)
    if fraction is None:
        model.load_weights(get)
    else:
        shapes = expected_shapes(cfg)
        read_total = sum(math.prod(s) for s in shapes.values())
        # int8 work, to weigh the two phases: every matrix but the embedding table, plus the head
        quant_total = 0 if weight_format != "int8" else (
            sum(math.prod(s) for n, s in shapes.items() if len(s) == 2)
            - (0 if cfg.tie_word_embeddings else math.prod(shapes["model.embed_tokens.weight"])))
        read = 0

        def counted(name: str) -> torch.Tensor:
            """`get`, then report the elements read so far."""
            nonlocal read
            t = get(name)
            read += t.numel()
            fraction(min(1.0, read / (read_total + quant_total)))
            return t

        model.load_weights(counted)
    if weight_format == "int8":
        model.quantize_int8(None if fraction is None else lambda done, total: fraction(
            min(1.0, (read_total + quant_total * done / total) / (read_total + quant_total))))
    return model.eval()


def load_model(path: str | Path | None, dtype: str | None = None, device: str | None = None,
               progress: Callable[[str], None] | None = None,
               fraction: Callable[[float], None] | None = None) -> LoadedModel:
    """Load a Hugging Face folder or a GGUF file (None: the default model) with its tokenizer;
    `progress(message)` at each stage, `fraction(f)` as the weights load (module docstring).
    device None: CUDA when torch sees a GPU, else the CPU (resolve_device)."""
    say = progress or (lambda msg: None)
    dev, device_choice = resolve_device(device)     # before any fetch: a bad --device fails fast
    if path is None:
        from llm_playground.model.weights.default_model import NAME, ensure_default_model
        path, default_name = ensure_default_model(progress), NAME
    else:
        default_name = None
    path = Path(path).expanduser()
    weight_format, act_dtype = resolve_dtype(dtype, dev)
    if path.exists():
        say(f"reading {path}")
    if path.is_dir():
        cfg = hf_folder.read_hf_config(path)
        _, get = hf_folder.open_hf_weights(path, cfg)
        tokenizer, template = hf_folder.read_hf_tokenizer(path)
        name = default_name or path.name
    elif path.is_file():
        reader = gguf_file.open_gguf(path)
        cfg = gguf_file.read_gguf_config(reader, path)
        _, get = gguf_file.open_gguf_weights(reader, cfg, path)
        tokenizer, template = gguf_file.read_gguf_tokenizer(path, reader)    # parsed once
        general = reader.fields.get("general.name")
        name = default_name or (general.contents() if general is not None else path.stem)
    else:
        raise ModelLoadError(f"{path}: no such file or directory (expected a .gguf file or a "
                             f"Hugging Face model directory)")
    say(f"loading {name} ({cfg.num_layers} layers, hidden {cfg.hidden_size}) as {weight_format} "
        f"on {dev}" + (f" ({device_choice})" if device_choice else ""))
    model = build_model(cfg, get, weight_format, act_dtype, dev, fraction)
    return LoadedModel(model=model, config=cfg, tokenizer=tokenizer, chat_template=template,
                       name=name, path=path, dtype=act_dtype, device=dev, weight_format=weight_format,
                       device_choice=device_choice)
