"""`load_model`: one entry point from a path (GGUF file or Hugging Face directory) to a model.

Picks the reader by what the path is (a directory -> model/weights/hf_folder.py, a file starting with
the GGUF magic -> model/weights/gguf_file.py; None -> the default model), resolves the dtype policy,
builds `LlamaForCausalLM` and fills it. A GGUF file is parsed once: the same reader gives the
config, the weights and the tokenizer.

Two choices, kept apart: `dtype` is the compute dtype (activations, norms, embeddings, KV
cache): float32 | bfloat16 | float16. `weights` is how the projections are stored
(`resolve_weights`): float (dequantised to the compute dtype, as before), int8 / int4
(quantised at load, group `group_size`), native (a GGUF file's own Q4_0 / Q4_1 / Q8_0 blocks,
repacked without rounding by model/weights/gguf_repack.py; other types quantised to int8), or
None = auto (CPU: int8 with bfloat16 compute, the measured fastest CPU mode; CUDA: float; a
compute dtype given alone keeps float weights, so `--dtype float32` stays the exact mode).
The old `dtype="int8"` still works: it means weights int8, compute bfloat16 (with a note). Two callbacks report progress: `progress(message)` names
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
# "int8" as a dtype is the old spelling of weights int8 with bfloat16 compute (still accepted).
WEIGHT_FORMATS = (*DTYPES, "int8")
WEIGHTS = ("native", "float", "int8", "int4")
CPU_DEFAULT = "int8"      # measured fastest CPU decode (see docs / report); float32 is the exact mode
CUDA_DEFAULT = "bfloat16"
INT4_GROUP_DEFAULT = 128  # gpt-fast's and AWQ's default: 6% of scale/min bytes at float16
                          # (int4_group: smaller when it does not divide the row)
HEAD_PARTS = ("lm_head.weight", "model.embed_tokens.weight")   # the head (tied or not)
LEGACY_INT8_NOTE = "--dtype int8 means --weights int8 --dtype bfloat16 now"


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
    weight_format: str = ""          # float32 | bfloat16 | float16 (float weights) | int8 | int4 | native
    device_choice: str = ""          # how the device was chosen: "" named by the caller, else "auto, ..."
    weights: str = ""                # what the projections hold, e.g. "Q4_1 g32 + Q8_0 head", "bfloat16"
    notes: tuple[str, ...] = ()      # what was changed from what was asked, one line each


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
    """(weight format, compute dtype) from --dtype alone (None = the device's default); the old
    interface, kept for callers that know no `weights` (resolve_weights is the full rule)."""
    fmt, act, _ = resolve_weights(dtype, None, device)
    return fmt, act


def resolve_weights(dtype: str | None, weights: str | None, device: torch.device
                    ) -> tuple[str, torch.dtype, list[str]]:
    """(weight format, compute dtype, notes) from --dtype and --weights (module docstring).
    The format is a float dtype name (float weights) or int8 | int4 | native."""
    notes: list[str] = []
    if weights is not None and weights not in WEIGHTS:
        raise ModelLoadError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if dtype == "int8":                                   # the old spelling
        if weights not in (None, "int8"):
            raise ModelLoadError(f"--dtype int8 (int8 weights) contradicts --weights {weights}; "
                                 f"pass --dtype bfloat16 --weights {weights}")
        weights, dtype = "int8", "bfloat16"
        notes.append(LEGACY_INT8_NOTE)
    if dtype is not None and dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    if weights is None:                                   # auto
        if dtype is None and device.type == "cpu":
            from llm_playground.model.network.linear import int8_supported
            if int8_supported():
                return "int8", torch.bfloat16, notes
        fmt = dtype or CUDA_DEFAULT          # CUDA, a dtype given, or a CPU without int8 ops
        return fmt, DTYPES[fmt], notes
    act = DTYPES[dtype or "bfloat16"]
    if weights == "float":
        return str(act).removeprefix("torch."), act, notes
    if weights == "int8" and device.type == "cpu":
        from llm_playground.model.network.linear import int8_supported
        if not int8_supported():
            raise ModelLoadError("--weights int8 needs torch's CPU int8 matmul "
                                 "(aten._weight_int8pack_mm), which this torch lacks")
    return weights, act, notes


def check_group_size(group_size: int | None, weights: str) -> None:
    """A group size must be a positive multiple of 16 (the kernels' K tiles)."""
    from llm_playground.kernels.quant_layout import GROUP_MULTIPLE
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < GROUP_MULTIPLE \
            or group_size % GROUP_MULTIPLE:
        raise ModelLoadError(f"--group-size {group_size!r}: must be a multiple of {GROUP_MULTIPLE} "
                             f"(32, 64, 128, ...)")
    if weights not in ("int8", "int4"):
        raise ModelLoadError(f"--group-size applies to --weights int8 or int4, not {weights}")


def int4_group(in_features: int) -> int:
    """The default int4 group for rows of `in_features`: INT4_GROUP_DEFAULT, or the largest of
    64 / 32 / 16 that divides the row (576 -> 64), so no row is padded and the CPU op needs no
    padded activations."""
    for g in (INT4_GROUP_DEFAULT, 64, 32, 16):
        if in_features % g == 0:
            return g
    return INT4_GROUP_DEFAULT


def make_packer(weight_format: str, group_size: int | None, native=None):
    """pack(parts, float weight) -> PackedWeight for LlamaForCausalLM.quantize_projections.
    `native(name) -> PackedWeight | None` (gguf_repack.packed_getter) for --weights native:
    the file's blocks when every part has a kernel and they agree, else int8 per channel."""
    from llm_playground.kernels.quant_layout import PackedWeight, quantize_int4, quantize_int8
    if weight_format == "int8":
        return lambda parts, w: quantize_int8(w, group_size)
    if weight_format == "int4":                 # the output head stays 8-bit, as llama.cpp's
        return lambda parts, w: (quantize_int8(w, None) if parts[0] in HEAD_PARTS  # Q4 types do
                                 else quantize_int4(w, group_size or int4_group(w.shape[1])))

    def pack(parts: list[str], w: torch.Tensor) -> PackedWeight:
        found = [native(p) for p in parts] if native is not None else [None]
        if all(f is not None for f in found):
            try:
                return PackedWeight.cat(found) if len(found) > 1 else found[0]
            except ValueError:                 # parts of different types (q Q4_1, v Q8_0, ...)
                pass
        return quantize_int8(w, None)

    return pack


def build_model(cfg: ModelConfig, get: Callable[[str], torch.Tensor], weight_format: str,
                act_dtype: torch.dtype, device: torch.device,
                fraction: Callable[[float], None] | None = None, group_size: int | None = None,
                native=None) -> LlamaForCausalLM:
    """A LlamaForCausalLM filled from `get`, its projections quantised when `weight_format` is
    int8 / int4 / native (make_packer; `native` the GGUF's packed getter), in eval mode.
    `fraction(f)` after each tensor read and each matrix quantized (see the module docstring)."""
    quantised = weight_format in ("int8", "int4", "native")
    model = LlamaForCausalLM(cfg, act_dtype, device)
    if fraction is None:
        model.load_weights(get)
    else:
        shapes = expected_shapes(cfg)
        read_total = sum(math.prod(s) for s in shapes.values())
        # int8 work, to weigh the two phases: every matrix but the embedding table, plus the head
        quant_total = 0 if not quantised else (
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
    if quantised:
        model.quantize_projections(
            make_packer(weight_format, group_size, native),
            None if fraction is None else lambda done, total: fraction(
                min(1.0, (read_total + quant_total * done / total) / (read_total + quant_total))))
    return model.eval()


def load_model(path: str | Path | None, dtype: str | None = None, device: str | None = None,
               progress: Callable[[str], None] | None = None,
               fraction: Callable[[float], None] | None = None, weights: str | None = None,
               group_size: int | None = None) -> LoadedModel:
    """Load a Hugging Face folder or a GGUF file (None: the default model) with its tokenizer;
    `progress(message)` at each stage, `fraction(f)` as the weights load (module docstring).
    device None: CUDA when torch sees a GPU, else the CPU (resolve_device). `dtype` is the
    compute dtype, `weights` the projections' storage (resolve_weights), `group_size` the
    int8 / int4 group (None: int8 per channel, int4 128)."""
    say = progress or (lambda msg: None)
    dev, device_choice = resolve_device(device)     # before any fetch: a bad --device fails fast
    if path is None:
        from llm_playground.model.weights.default_model import NAME, ensure_default_model
        path, default_name = ensure_default_model(progress), NAME
    else:
        default_name = None
    path = Path(path).expanduser()
    weight_format, act_dtype, notes = resolve_weights(dtype, weights, dev)
    check_group_size(group_size, weight_format)
    native = None
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
        if weight_format == "native":
            from llm_playground.model.weights.gguf_repack import packed_getter
            native = packed_getter(reader, cfg)
        general = reader.fields.get("general.name")
        name = default_name or (general.contents() if general is not None else path.stem)
    else:
        raise ModelLoadError(f"{path}: no such file or directory (expected a .gguf file or a "
                             f"Hugging Face model directory)")
    say(f"loading {name} ({cfg.num_layers} layers, hidden {cfg.hidden_size}) as {weight_format} "
        f"on {dev}" + (f" ({device_choice})" if device_choice else ""))
    if weight_format == "native" and native is None:      # a folder of float safetensors
        notes.append(f"--weights native: {path.name} holds float weights; quantised to int8")
        weight_format = "int8"
    for note in notes:
        say(f"note: {note}")
    model = build_model(cfg, get, weight_format, act_dtype, dev, fraction, group_size, native)
    stored = describe_weights(model, act_dtype)
    for note in dict.fromkeys(getattr(m, "note", "") for m in model.modules()):
        if note:
            notes.append(note)
            say(f"note: {note}")
    return LoadedModel(model=model, config=cfg, tokenizer=tokenizer, chat_template=template,
                       name=name, path=path, dtype=act_dtype, device=dev, weight_format=weight_format,
                       device_choice=device_choice, weights=stored, notes=tuple(notes))


def describe_weights(model: LlamaForCausalLM, act_dtype: torch.dtype) -> str:
    """What the projections hold: 'bfloat16', 'Q4_1 g32, head Q8_0 g32', 'int8 per-channel'."""
    from llm_playground.model.network.quant_linear import QuantLinear
    if not isinstance(model.lm_head, QuantLinear):
        return str(act_dtype).removeprefix("torch.")
    body = dict.fromkeys(p.stored for layer in model.layers
                         for p in (layer.qkv_proj, layer.o_proj, layer.gate_up_proj, layer.down_proj))
    text = " + ".join(body)
    head = model.lm_head.stored
    return text if body.keys() == {head} else f"{text}, head {head}"
