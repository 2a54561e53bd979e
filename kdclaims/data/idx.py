"""Reader for IDX files (the MNIST / Fashion-MNIST container), raw or gzip-compressed.

Layout: 2 zero bytes, a dtype code, the number of dims ``d``, then ``d`` big-endian uint32 sizes, then the
values in big-endian row-major order. Decoded arrays are cached per process.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A file that is not a well-formed IDX file (bad magic, unknown dtype, truncated or oversized payload)."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip stream ({err})") from err


def decode_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into a numpy array of its dtype and dims."""
    if len(data) < 4:
        raise IdxFormatError(f"{source}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{source}: bad magic number {data[:4].hex()}: an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxFormatError(f"{source}: unknown IDX dtype code 0x{code:02X}; known: {known}")
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{source}: truncated header: {ndim} dims need {header} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        kind = "truncated" if payload < expected else "oversized"
        raise IdxFormatError(
            f"{source}: {kind} payload: dims {dims} of {dtype.name} need {expected} bytes after the header, "
            f"found {payload}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> Tensor:
    arr = decode_idx(_read_bytes(Path(path)), source=path)
    return torch.from_numpy(np.ascontiguousarray(arr))


def read_idx(path: str | os.PathLike) -> Tensor:
    """The tensor in an IDX file (``.gz`` or raw, told apart by content). Cached per process: treat as read-only."""
    path = Path(path)
    st = path.stat()
    return _read_idx_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of an array (used to write test fixtures)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX code")
    big = np.ascontiguousarray(array, dtype=np.dtype(IDX_DTYPES[codes[dtype]]))
    head = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return head + big.tobytes()
