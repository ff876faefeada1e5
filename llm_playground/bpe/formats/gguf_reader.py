"""A bounds-checked `gguf.GGUFReader`: reads past the end of the file fail with sizes, not later.

The stock reader slices its memory map without bounds checks: a file cut inside its metadata
fails in numpy ("When changing to a larger dtype..."), with an IndexError, or not at all (a
string value cut short reads as a shorter string). `checked_reader_class()` returns a subclass
whose every header read is checked and whose tensors are checked up front. Used by the tokenizer
reader (bpe/formats/gguf.py) and the model reader (model/weights/gguf_file.py). It reads no
tensor data and interprets no metadata.
"""
from __future__ import annotations

import math

import numpy as np

from llm_playground.bpe.formats.common import FormatError


class TruncatedGGUF(FormatError):
    """A read that runs past the end of the file (raised by the checked reader)."""


def checked_reader_class():
    """GGUFReader that turns reads past the end of the file into TruncatedGGUF with sizes.

    The stock reader slices its memory map without a bounds check, so a short file fails later in
    numpy ("When changing to a larger dtype..."). Tensors are checked up front, naming the first
    that runs past the end and the size a complete file needs; header reads are checked one by one.
    """
    from gguf import GGUFReader
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    class _CheckedReader(GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > len(self.data):
                raise TruncatedGGUF(f"truncated or corrupt GGUF file: its header runs past the end of the file (needs at least "
                                     f"{end} bytes, the file has {len(self.data)} bytes)")
            return super()._get(offset, dtype, count, override_order)

        def _build_tensors(self, start_offs, fields):
            size, first, need = len(self.data), None, 0
            for field in fields:
                name_data, dims, raw_dtype, rel = (field.parts[i] for i in (1, 3, 4, 5))
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
                start = int(start_offs + rel[0])
                end = start + math.prod(int(d) for d in dims) * type_size // block
                need = max(need, end)
                if end > size and first is None:
                    first = (bytes(name_data).decode("utf-8", "replace"), start, end)
            if first is not None:
                name, start, end = first
                raise TruncatedGGUF(f"truncated GGUF file: it has {size} bytes but its tensors need "
                                     f"{need}; tensor {name} (bytes {start}..{end}) runs past the end")
            return super()._build_tensors(start_offs, fields)

    return _CheckedReader
