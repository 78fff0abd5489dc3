"""Read and write IDX files (the MNIST format), raw or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataError", "read_idx", "write_idx", "parse_idx", "idx_magic"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX data-type code -> big-endian numpy dtype (the codes of the original MNIST spec).
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}


#: The most dimensions a NumPy array can have (64 in NumPy 2, 32 before).
MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


class DataError(ValueError):
    """Missing or corrupt data; the message says what is wrong, where, and how to fix it.

    Example:
        >>> raise DataError("/tmp/x.gz: truncated")  # doctest: +SKIP
    """


def idx_magic(array: np.ndarray) -> int:
    """Return the IDX magic number that ``array``'s dtype and rank would be written with.

    Example:
        >>> hex(idx_magic(np.zeros((2, 28, 28), np.uint8)))
        '0x803'
    """
    dt = np.dtype(array.dtype)
    code = _KIND_TO_CODE.get((dt.kind, dt.itemsize))
    if code is None:
        names = ", ".join(str(d.newbyteorder("=")) for d in _CODE_TO_DTYPE.values())
        raise TypeError(f"IDX cannot store dtype {dt}; supported dtypes: {names}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs an array with 1 to 255 dimensions, got {array.ndim}")
    return (code << 8) | array.ndim


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (gzip-compressed or raw) into a writable native-endian numpy array.

    ``source`` names the data in error messages.

    Example:
        >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3])).tolist()
        [7, 3]
    """
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{source}: corrupt gzip stream ({exc}); the file is damaged or incomplete, "
                "replace it with a fresh copy"
            ) from exc
    if len(data) < 4:
        raise DataError(
            f"{source}: only {len(data)} bytes, too short for an IDX header (needs at least 4)"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0 or code not in _CODE_TO_DTYPE or ndim == 0:
        raise DataError(
            f"{source}: bad IDX magic number {magic} (0x{magic:08x}); expected 0x0000TTNN with a "
            "data-type byte TT in {08,09,0b,0c,0d,0e} and NN >= 1 dimensions (e.g. 2051 = "
            "0x00000803 for images, 2049 = 0x00000801 for labels); this is not an IDX file"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{source}: truncated header: magic 0x{magic:08x} announces {ndim} dimension sizes "
            f"({header_len} header bytes) but the file has only {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    if ndim > MAX_DIMS:  # NumPy's limit; its own error would name no file
        raise DataError(
            f"{source}: header announces {ndim} dimensions, more than the {MAX_DIMS} an array "
            "can have; the file is damaged or not IDX"
        )
    dtype = _CODE_TO_DTYPE[code]
    count = math.prod(shape)
    expected = header_len + count * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{source}: truncated: header promises shape {shape} ({expected} bytes in all) but "
            f"the data has only {len(data)} bytes; the file is incomplete, replace it"
        )
    if len(data) > expected:
        raise DataError(
            f"{source}: {len(data) - expected} unexpected extra bytes after the data: header "
            f"promises shape {shape} ({expected} bytes in all) but the data has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file and return its array, shaped as its header says.

    Gzip compression is detected from the magic bytes ``1f 8b``, not from the suffix.
    Raises :class:`DataError` if the file is missing, not IDX, truncated or has extra bytes.

    Example:
        >>> images = read_idx("mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return parse_idx(data, str(path))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip it if ``path`` ends with ``.gz``.

    uint8 (IDX type 0x08) is the usual type; int8, int16, int32, float32 and float64 also work.
    The gzip output is deterministic (mtime 0, no file name in the header). Returns the path.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
        >>> _ = write_idx(p, np.array([7, 2, 1], np.uint8))
        >>> read_idx(p).tolist()
        [7, 2, 1]
    """
    path = Path(path)
    arr = np.asarray(array)
    magic = idx_magic(arr)
    if any(n > 0xFFFFFFFF for n in arr.shape):
        raise ValueError(f"IDX dimension sizes must fit in 32 bits, got shape {arr.shape}")
    big_endian = arr.astype(_CODE_TO_DTYPE[magic >> 8], copy=False)
    header = struct.pack(f">I{arr.ndim}I", magic, *arr.shape)
    payload = header + np.ascontiguousarray(big_endian).tobytes()
    if path.name.endswith(".gz"):
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        ):
            gz.write(payload)
    else:
        path.write_bytes(payload)
    return path
