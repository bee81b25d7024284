"""The structs and constants of docs/format.md, version 1."""

import struct

import numpy as np
import xxhash

FORMAT_VERSION = 1
ALIGN = 64
HEADER_SIZE = 64
MAX_DEPTH = 64

FLAG_SEALED = 1
FLAG_HASHED = 2

KIND_NULL, KIND_ARRAY, KIND_STRINGS, KIND_LIST, KIND_BYTES = range(5)
KIND_NAMES = ("null", "array", "strings", "list", "bytes")

ENC_UTF8, ENC_LATIN1, ENC_BYTES = range(3)

# Region header (section 3): magic, version, flags, region_size, root_offset,
# node_count, created_ns, creator_pid, reserved u32, reserved u64, header_hash.
REGION_HEADER = struct.Struct("<4sHHQQQQIIQQ")
# Node header (section 4.1): magic, kind, dtype, flags, length, data_offset,
# data_size, names_offset, attrs_offset, hash, tag.
NODE_HEADER = struct.Struct("<4sBBHQQQQQQ8s")
NODE_HASH_AT = 48
# String entry (section 4.4): offset, nbytes, encoding, padding.
STRING_ENTRY = struct.Struct("<Qib3x")
assert REGION_HEADER.size == NODE_HEADER.size == HEADER_SIZE and STRING_ENTRY.size == 16

# Array dtypes (section 4.3): code -> (name, numpy dtype). lgl is an i32
# holding 0, 1 or NA.
DTYPES = {
    1: ("u8", np.dtype("<u1")),
    2: ("i8", np.dtype("<i1")),
    3: ("u16", np.dtype("<u2")),
    4: ("i16", np.dtype("<i2")),
    5: ("u32", np.dtype("<u4")),
    6: ("i32", np.dtype("<i4")),
    7: ("u64", np.dtype("<u8")),
    8: ("i64", np.dtype("<i8")),
    9: ("f32", np.dtype("<f4")),
    10: ("f64", np.dtype("<f8")),
    11: ("c128", np.dtype("<c16")),
    12: ("lgl", np.dtype("<i4")),
}
DTYPE_LGL = 12

NA_INTEGER = -(1 << 31)
NA_REAL_BITS = 0x7FF00000000007A2  # R's NA in f64 (and either half of c128)
NA_REAL = np.array([NA_REAL_BITS], dtype="<u8").view("<f8")[0]


def align64(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def header_hash(header56) -> int:
    """XXH3-64, seed 0, of the first 56 bytes of a region header."""
    return xxhash.xxh3_64_intdigest(bytes(header56[:56]))


def node_hash(header: bytes, data) -> int:
    """A node's hash (section 5): its header with the hash field as 0, then
    its data block."""
    h = xxhash.xxh3_64()
    h.update(header[:NODE_HASH_AT] + bytes(8) + header[NODE_HASH_AT + 8:])
    if data is not None and len(data):
        h.update(data)
    return h.intdigest()
