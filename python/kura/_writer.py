"""Python values to the canonical layout of docs/format.md section 6, the
bytes kura's C++ builder writes for the same value."""

import numbers

import numpy as np

from . import _layout as L
from . import _reader

_MAX_STRING = (1 << 31) - 1


class Annotated:
    """A value with names and attributes for kura.share:
    Annotated(np.arange(4), attrs={"units": "m"}), Annotated([1, 2], names=["a", "b"])."""

    __slots__ = ("value", "names", "attrs")

    def __init__(self, value, names=None, attrs=None):
        self.value = value
        self.names = names
        self.attrs = dict(attrs or {})


class _V:
    """One node to write."""

    __slots__ = ("kind", "dtype", "length", "data", "strings", "children", "names", "attrs", "tag")

    def __init__(self, kind, length=0, dtype=0, data=None, strings=None, children=(), tag=b""):
        self.kind = kind
        self.dtype = dtype
        self.length = length
        self.data = data  # a contiguous bytes-like of exactly the data size, for arrays and bytes
        self.strings = strings  # [(bytes or None, encoding)] for strings
        self.children = list(children)
        self.names = None  # a strings _V
        self.attrs = []  # [(key, _V)]
        self.tag = tag


def _strings(items):
    out = []
    for s in items:
        if s is None:
            out.append((None, L.ENC_UTF8))
        elif isinstance(s, str):
            out.append((s.encode("utf-8", "surrogateescape"), L.ENC_UTF8))
        elif isinstance(s, (bytes, bytearray, memoryview, np.bytes_)):
            out.append((bytes(s), L.ENC_BYTES))
        else:
            raise TypeError("a string element is str, bytes or None, not %s" % type(s).__name__)
    for b, _ in out:
        if b is not None and len(b) > _MAX_STRING:
            raise ValueError("a string is longer than 2^31-1 bytes")
    return _V(L.KIND_STRINGS, len(out), strings=out)


def _numpy_code(dt):
    if dt.kind == "b":
        return L.DTYPE_LGL
    table = {("u", 1): 1, ("i", 1): 2, ("u", 2): 3, ("i", 2): 4, ("u", 4): 5, ("i", 4): 6,
             ("u", 8): 7, ("i", 8): 8, ("f", 4): 9, ("f", 8): 10, ("c", 16): 11}
    code = table.get((dt.kind, dt.itemsize))
    if code is None:
        raise TypeError("numpy dtype %s has no kura dtype (kura has u8 to u64, i8 to i64, f32, "
                        "f64, complex128 and bool)" % dt)
    return code


def _array(a):
    """A numpy array as an array node; more than one dimension is stored in
    column-major order with a `dim` attribute, as R stores a matrix."""
    if a.dtype.kind in "UO":
        flat = a.reshape(-1, order="F") if a.ndim > 1 else a.reshape(-1)
        v = _strings([None if x is None else str(x) if isinstance(x, np.str_) else x for x in flat])
    elif a.dtype.kind == "S":
        flat = a.reshape(-1, order="F") if a.ndim > 1 else a.reshape(-1)
        v = _strings([bytes(x) for x in flat])
    else:
        code = L.DTYPE_LGL if isinstance(a, _reader.Logical) else _numpy_code(a.dtype)
        want = L.DTYPES[code][1]
        if a.dtype.kind == "b":
            a = a.astype(want)
        elif a.dtype != want:
            a = a.astype(want)  # byte order only: the kind and width already match
        flat = np.asarray(a).reshape(-1, order="F" if a.ndim > 1 else "C")
        flat = np.ascontiguousarray(flat)
        v = _V(L.KIND_ARRAY, flat.size, dtype=code, data=memoryview(flat).cast("B"))
    if a.ndim > 1:
        if any(d > (1 << 31) - 1 for d in a.shape):
            raise ValueError("a dimension is larger than 2^31-1")
        dim = np.array(a.shape, dtype="<i4")
        v.attrs.append(("dim", _V(L.KIND_ARRAY, dim.size, dtype=6, data=memoryview(dim).cast("B"))))
    return v


def _scalar_array(x, dtype):
    return _array(np.array([x], dtype=dtype))


def _data_frame(columns, nrow):
    v = _list(list(columns.values()), list(columns.keys()))
    rn = np.array([L.NA_INTEGER, -nrow], dtype="<i4")
    v.attrs = [("class", _strings(["data.frame"])),
               ("row.names", _V(L.KIND_ARRAY, 2, dtype=6, data=memoryview(rn).cast("B")))]
    return v


def _list(items, names=None):
    v = _V(L.KIND_LIST, len(items), children=[to_node(x) for x in items])
    if names is not None:
        v.names = _strings(names)
    return v


def _mapped(node):
    """A copy of a mapped node, first held to the tree rule, so that a region
    with shared links cannot make the copy exponentially large."""
    node.walk(lambda n: None)
    return _copy_node(node)


def _copy_node(n):
    if n.kind == L.KIND_STRINGS:
        v = _V(L.KIND_STRINGS, n.length,
               strings=[(None if b is None else bytes(b), e) for b, e in map(n.entry, range(n.length))])
    elif n.kind == L.KIND_LIST:
        v = _V(L.KIND_LIST, n.length, children=[_copy_node(n.child(i)) for i in range(n.length)])
    else:
        v = _V(n.kind, n.length, dtype=n.dtype, data=n.data(), tag=n.tag.encode("ascii"))
    names = n.names_node()
    if names is not None:
        v.names = _copy_node(names)
    a = n.attrs_node()
    if a is not None:
        keys = a.names_node()
        v.attrs = [(decode_key(keys, i), _copy_node(a.child(i))) for i in range(a.length)]
    return v


def decode_key(keys, i):
    b, _ = keys.entry(i)
    if b is None:
        raise _reader.CorruptRegion("an attribute key is NA")
    return bytes(b).decode("utf-8", "surrogateescape")


def to_node(x):
    """The node tree of a Python value (see kura.share for what maps to what)."""
    if isinstance(x, _V):
        return x
    if isinstance(x, Annotated):
        v = to_node(x.value)
        if x.names is not None:
            if len(x.names) != v.length:
                raise ValueError("%d names for a value of length %d" % (len(x.names), v.length))
            v.names = _strings(x.names)
        for k, a in x.attrs.items():
            if not isinstance(k, str) or not k:
                raise ValueError("attribute keys are non-empty str")
            v.attrs = [(kk, vv) for kk, vv in v.attrs if kk != k] + [(k, to_node(a))]
        return v
    if x is None:
        return _V(L.KIND_NULL)
    if isinstance(x, (_reader.List, _reader.Strings)):
        return _mapped(x.node)
    if isinstance(x, _reader.Bytes):
        tag = x.tag.encode("ascii") if isinstance(x.tag, str) else bytes(x.tag)
        if len(tag) > 8 or any(c < 0x21 or c > 0x7E for c in tag):
            raise ValueError("a bytes tag is up to 8 printable ASCII characters, not %r" % x.tag)
        data = memoryview(x.data).cast("B")
        return _V(L.KIND_BYTES, len(data), data=data, tag=tag)
    if isinstance(x, (bytes, bytearray, memoryview)):
        data = memoryview(x).cast("B")
        return _V(L.KIND_BYTES, len(data), data=data)
    if isinstance(x, str):
        return _strings([x])
    if isinstance(x, (bool, np.bool_)):
        return _lgl([bool(x)])
    if isinstance(x, np.ndarray):
        return _array(x)
    if isinstance(x, np.generic):
        return _array(np.asarray(x).reshape(1))
    if isinstance(x, numbers.Integral):
        x = int(x)
        if -(1 << 63) <= x < 1 << 63:
            return _scalar_array(x, "<i8")
        if 0 <= x < 1 << 64:
            return _scalar_array(x, "<u8")
        raise OverflowError("integer %d does not fit in 64 bits" % x)
    if isinstance(x, numbers.Real):
        return _scalar_array(float(x), "<f8")
    if isinstance(x, numbers.Complex):
        return _scalar_array(complex(x), "<c16")
    if isinstance(x, dict):
        for k in x:
            if not isinstance(k, str):
                raise TypeError("dict keys are str (they become names), not %s" % type(k).__name__)
        return _list(list(x.values()), list(x.keys()))
    if isinstance(x, (list, tuple)):
        return _list(list(x))
    if type(x).__name__ == "DataFrame" and hasattr(x, "columns"):
        cols = {str(c): np.asarray(x[c]) for c in x.columns}
        return _data_frame(cols, len(x))
    raise TypeError("kura cannot share a %s" % type(x).__name__)


def _lgl(bools):
    a = np.array(bools, dtype="<i4")
    return _V(L.KIND_ARRAY, a.size, dtype=L.DTYPE_LGL, data=memoryview(a).cast("B"))


def data_frame(columns):
    """A value that kura.share writes as an R data frame: a named list of
    equally long columns with class "data.frame" and compact row names."""
    lengths = {len(np.asarray(v)) if not isinstance(v, (list, tuple)) else len(v)
               for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError("data frame columns differ in length: %s" % sorted(lengths))
    return _data_frame(dict(columns), lengths.pop() if lengths else 0)


# --- Layout -------------------------------------------------------------------


class _Planner:
    def __init__(self):
        self.cursor = L.HEADER_SIZE
        self.slots = []  # [offset, v, data_offset, data_size, names_offset, attrs_offset, children]

    def alloc(self, n):
        off = self.cursor
        self.cursor += L.align64(n)
        return off

    @staticmethod
    def depth(d):
        if d > L.MAX_DEPTH:
            raise ValueError("value nested deeper than %d links (names and attributes count)" % L.MAX_DEPTH)

    def place(self, v, d):
        self.depth(d)
        if v.kind == L.KIND_STRINGS:
            size = 0
            if v.length:
                size = L.align64(16 * v.length) + sum(len(b) + 1 for b, _ in v.strings if b is not None)
        elif v.kind == L.KIND_LIST:
            size = 8 * v.length
        elif v.kind == L.KIND_NULL:
            size = 0
        else:
            size = len(v.data)
        slot = [self.alloc(L.HEADER_SIZE), v, 0, size, 0, 0, []]
        if size:
            slot[2] = self.alloc(size)
        self.slots.append(slot)
        if v.names is not None:
            slot[4] = self.place(v.names, d + 1)
        if v.attrs:
            slot[5] = self.place_attrs(v.attrs, d + 1)
        if v.kind == L.KIND_LIST:
            slot[6] = [self.place(c, d + 1) for c in v.children]
        return slot[0]

    def place_attrs(self, attrs, d):
        self.depth(d)
        keys = [k for k, _ in attrs]
        if len(set(keys)) != len(keys) or not all(keys):
            raise ValueError("attribute keys must be unique and non-empty: %r" % keys)
        slot = [self.alloc(L.HEADER_SIZE), _V(L.KIND_LIST, len(attrs)), 0, 8 * len(attrs), 0, 0, []]
        slot[2] = self.alloc(slot[3])
        self.slots.append(slot)
        slot[4] = self.place(_strings(keys), d + 1)
        slot[6] = [self.place(a, d + 1) for _, a in attrs]
        return slot[0]


def _strings_block(v, size):
    block = bytearray(size)
    packed = L.align64(16 * v.length)
    pos = 0
    for i, (b, enc) in enumerate(v.strings):
        if b is None:
            L.STRING_ENTRY.pack_into(block, 16 * i, 0, -1, 0)
            continue
        L.STRING_ENTRY.pack_into(block, 16 * i, pos, len(b), enc)
        block[packed + pos:packed + pos + len(b)] = b
        pos += len(b) + 1
    return block


def layout(x, created_ns, creator_pid):
    """The pieces of the region holding `x`, hashed and sealed:
    (region_size, [(offset, bytes-like)]), the region header first."""
    root = to_node(x)
    p = _Planner()
    p.place(root, 0)
    pieces = []
    for off, v, data_offset, size, names_offset, attrs_offset, children in p.slots:
        if v.kind == L.KIND_STRINGS:
            data = _strings_block(v, size) if size else None
        elif v.kind == L.KIND_LIST:
            data = np.array(children, dtype="<u8").tobytes() if size else None
        else:
            data = v.data if size else None
        header = L.NODE_HEADER.pack(b"KNOD", v.kind, v.dtype, 0, v.length, data_offset, size,
                                    names_offset, attrs_offset, 0, v.tag.ljust(8, b"\0"))
        h = L.node_hash(header, data)
        header = header[:L.NODE_HASH_AT] + h.to_bytes(8, "little") + header[L.NODE_HASH_AT + 8:]
        pieces.append((off, header))
        if data is not None:
            pieces.append((data_offset, data))
    size = p.cursor
    rh = L.REGION_HEADER.pack(b"KURA", L.FORMAT_VERSION, L.FLAG_SEALED | L.FLAG_HASHED, size,
                              p.slots[0][0], len(p.slots), created_ns, creator_pid, 0, 0, 0)
    rh = rh[:56] + L.header_hash(rh).to_bytes(8, "little")
    return size, [(0, rh)] + pieces


def build(x, created_ns=0, creator_pid=0):
    """The bytes of a region holding `x` (what kura.share publishes), with
    the given stamp: build({"x": np.array([1.5, 2.5]), "tag": "a"}) is the
    golden region of docs/format.md section 8."""
    size, pieces = layout(x, created_ns, creator_pid)
    out = bytearray(size)
    for off, b in pieces:
        out[off:off + len(b)] = b
    return bytes(out)
