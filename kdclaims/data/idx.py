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

from kdclaims.errors import DataError
from kdclaims.fingerprint import note_read

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(DataError):
    """A file that is not a well-formed IDX file (bad magic, unknown dtype, truncated or oversized payload)."""


MAX_IDX_BYTES = 1 << 32  # a header that declares more is refused before anything is read
_CHUNK = 1 << 20


def _read_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of an IDX file, read as a stream: the header first, then at most the payload it
    declares plus one byte, so an oversized file (a gzip bomb) is refused without being decompressed whole."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        try:
            head = stream.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_DTYPES or head[3] == 0:
                return head  # decode_idx names the header's problem
            dims = stream.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                return head + dims
            shape = [int(d) for d in np.frombuffer(dims, dtype=">u4")]
            expected = int(np.prod(shape, dtype=object)) * np.dtype(IDX_DTYPES[head[2]]).itemsize
            if expected > MAX_IDX_BYTES:
                raise IdxFormatError(f"{path}: header declares dims {tuple(shape)}, {expected} bytes: more than "
                                     f"the {MAX_IDX_BYTES} bytes an IDX file may hold here")
            body = bytearray()
            while len(body) <= expected and (chunk := stream.read(min(_CHUNK, expected + 1 - len(body)))):
                body += chunk
        except (EOFError, OSError, zlib.error) as err:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip stream ({err})") from err
    if len(body) > expected:
        raise IdxFormatError(f"{path}: oversized payload: dims {tuple(shape)} need {expected} bytes after the "
                             f"header; the file holds more")
    return head + dims + bytes(body)


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
    note_read(path)
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
