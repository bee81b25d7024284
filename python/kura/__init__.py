"""kura for Python: read and write kura regions (docs/format.md) in shared
memory, zero-copy, interoperable with kura's C++ library, its `kura` tool
and its R package.

    import kura, numpy as np
    s = kura.share({"x": np.arange(1e6), "tag": "a"})   # a region, published
    v = kura.map(s.name)                                  # a kura.List
    v["x"]                                                # a read-only view of the mapping
    kura.map(s.name + "[2]")[0]                           # 'a'

What share writes:

    None                        null
    bool, numpy bool arrays     lgl (R's logical; a kura.Logical keeps NA_INTEGER as NA)
    int                         i64 (u64 above 2^63-1), one element
    float, complex              f64, c128, one element
    numpy arrays and scalars    the matching dtype; 2 or more dimensions in
                                column-major order with a `dim` attribute
    str, numpy str arrays       strings (UTF-8; None is NA, bytes are opaque)
    bytes, kura.Bytes           bytes (kura.Bytes carries a tag)
    list, tuple                 list
    dict (str keys)             list with names
    kura.data_frame(columns),
    pandas.DataFrame            an R data frame
    kura.Annotated(v, names, attrs)   v with names and attributes
    values returned by map      copied as they are

What map returns: None, a read-only numpy array (kura.Logical for lgl,
reshaped by a `dim` attribute), kura.Strings, kura.List, kura.Bytes, or for
a data frame a pandas.DataFrame (a dict of columns without pandas).
R's NA is kura.NA_REAL in float arrays (kura.is_na finds it among NaNs) and
kura.NA_INTEGER in lgl arrays; None in strings.
"""

from ._errors import (CorruptRegion, DirectoryError, InvalidName, KuraError, NoSpace, NotAList,
                      NotFound, OutOfRange, Refused)
from ._layout import FORMAT_VERSION, NA_INTEGER, NA_REAL
from ._names import Name, format_name, parse_name
from ._reader import Bytes, List, Logical, Region, Strings
from ._shm import Shared, directory, map, node, open_region, process_owner, share, verify
from ._writer import Annotated, build, data_frame

__version__ = "0.1.0"


def is_na(a):
    """A boolean mask of R's NA in a float64 or complex128 array: the NaNs
    whose low 32 bits are 1954 (docs/format.md section 4.3); in a complex
    array, either part."""
    import numpy as np

    a = np.asarray(a)
    if a.dtype.kind == "c":
        return is_na(a.real) | is_na(a.imag)
    bits = a.astype("<f8").view("<u8")
    return np.isnan(a) & ((bits & 0xFFFFFFFF) == 1954)


__all__ = [
    "Annotated", "Bytes", "CorruptRegion", "DirectoryError", "FORMAT_VERSION", "InvalidName",
    "KuraError", "List", "Logical", "NA_INTEGER", "NA_REAL", "Name", "NoSpace", "NotAList", "NotFound",
    "OutOfRange", "Refused", "Region", "Shared", "Strings", "build", "data_frame", "directory",
    "format_name", "is_na", "map", "node", "open_region", "parse_name", "process_owner", "share",
    "verify",
]
