"""Checked, read-only access to the bytes of a region (docs/format.md,
sections 3 to 7). Every header is copied out of the region (unpacked into
Python integers) before it is checked and used, so a writer changing the
bytes meanwhile cannot get past a check; every violation is a CorruptRegion,
never a read outside the buffer."""

from collections.abc import Sequence

import numpy as np

from . import _layout as L
from ._errors import CorruptRegion, NotAList, OutOfRange

_U64 = __import__("struct").Struct("<Q")
_TWO64 = 1 << 64


class Region:
    """One region's bytes (a read-only mapping, or any bytes-like object),
    with its header checked. Arrays taken from it are views of `buffer`."""

    def __init__(self, buffer, label="region"):
        self.buffer = buffer
        self.label = label
        self._mv = memoryview(buffer).cast("B")
        size = len(self._mv)
        if size < L.HEADER_SIZE:
            self._corrupt("is %d bytes, smaller than a region header" % size)
        raw = bytes(self._mv[: L.HEADER_SIZE])
        (magic, version, flags, region_size, root_offset, node_count, created_ns,
         creator_pid, _r1, _r2, hh) = L.REGION_HEADER.unpack(raw)
        if magic != b"KURA":
            self._corrupt("has no KURA magic (not a kura region)")
        if version != L.FORMAT_VERSION:
            self._corrupt("has unsupported version %d (this reader knows version %d)"
                          % (version, L.FORMAT_VERSION))
        if L.header_hash(raw) != hh:
            self._corrupt("has a region header whose hash does not match")
        if not flags & L.FLAG_SEALED:
            self._corrupt("is not sealed (its writer never finished it)")
        if flags & ~(L.FLAG_SEALED | L.FLAG_HASHED):
            self._corrupt("has unknown region flags 0x%x" % flags)
        if region_size != size:
            self._corrupt("says it is %d bytes but is %d" % (region_size, size))
        self.size = size
        self.flags = flags
        self.hashed = bool(flags & L.FLAG_HASHED)
        self.node_count = node_count
        self.created_ns = created_ns
        self.creator_pid = creator_pid
        self._check_header_offset(root_offset, "root_offset")
        if node_count > size // L.HEADER_SIZE:
            self._corrupt("claims %d nodes, more than fit in %d bytes" % (node_count, size))
        self.root_offset = root_offset

    def _corrupt(self, what):
        raise CorruptRegion("%s %s" % (self.label, what))

    def _check_header_offset(self, off, what):
        if off % L.ALIGN or off < L.HEADER_SIZE or off > self.size - L.HEADER_SIZE:
            self._corrupt("has %s %d, not a valid node header offset" % (what, off))

    def u64(self, off):
        return _U64.unpack_from(self._mv, off)[0]

    def root(self):
        return self.node(self.root_offset, ())

    def node(self, off, ancestors):
        """The node whose header is at `off`, reached through `ancestors`
        (the offsets from the root down to its parent), checked."""
        return Node(self, off, ancestors)


class Node:
    """A checked node header (a copy), and the links out of it, checked when
    they are followed."""

    __slots__ = ("region", "offset", "ancestors", "kind", "dtype", "length", "data_offset",
                 "data_size", "names_offset", "attrs_offset", "hash", "tag", "header")

    def __init__(self, region, off, ancestors):
        self.region = region
        self.offset = off
        self.ancestors = ancestors
        region._check_header_offset(off, "a link to")
        if off in ancestors:
            region._corrupt("links node %d to its own ancestor (a cycle)" % off)
        if len(ancestors) > L.MAX_DEPTH:
            region._corrupt("nests deeper than %d links" % L.MAX_DEPTH)
        raw = bytes(region._mv[off:off + L.HEADER_SIZE])
        self.header = raw
        (magic, kind, dtype, flags, length, data_offset, data_size, names_offset, attrs_offset,
         hash_, tag) = L.NODE_HEADER.unpack(raw)
        where = "node at %d" % off

        def bad(what):
            region._corrupt("has a %s %s" % (where, what))

        if magic != b"KNOD":
            bad("without KNOD magic")
        if kind > L.KIND_BYTES:
            bad("of unknown kind %d" % kind)
        if flags != 0:
            bad("with unknown flags 0x%x" % flags)
        if kind == L.KIND_ARRAY:
            if dtype not in L.DTYPES:
                bad("with unknown dtype %d" % dtype)
        elif dtype != 0:
            bad("with a dtype though it is not an array")
        if kind == L.KIND_BYTES:
            text = tag.rstrip(b"\0")
            if any(c < 0x21 or c > 0x7E for c in text):
                bad("whose tag is not printable ASCII followed by zero bytes")
        elif tag != bytes(8):
            bad("with a tag though it is not a bytes node")
        if data_offset % L.ALIGN:
            bad("whose data_offset %d is not a multiple of 64" % data_offset)
        if (data_offset == 0) != (data_size == 0):
            bad("whose data_offset and data_size disagree about having data")
        if data_size > region.size or data_offset > region.size - data_size:
            bad("whose data block (%d bytes at %d) passes the region's end" % (data_size, data_offset))
        if kind == L.KIND_NULL:
            want = 0 if length == 0 else None
        elif kind == L.KIND_ARRAY:
            want = length * L.DTYPES[dtype][1].itemsize
        elif kind == L.KIND_LIST:
            want = 8 * length
        elif kind == L.KIND_BYTES:
            want = length
        else:
            want = None
            if length == 0:
                want = 0
            elif data_size < L.align64(16 * length):
                bad("of %d strings whose data block is too small for their table" % length)
        if kind != L.KIND_STRINGS or length == 0:
            if want is None or want >= _TWO64 or data_size != want:
                bad("whose data_size %d does not agree with its kind and length %d"
                    % (data_size, length))
        self.kind = kind
        self.dtype = dtype
        self.length = length
        self.data_offset = data_offset
        self.data_size = data_size
        self.names_offset = names_offset
        self.attrs_offset = attrs_offset
        self.hash = hash_
        self.tag = tag.rstrip(b"\0").decode("ascii")

    # --- Links --------------------------------------------------------------

    def _link(self, off):
        if off == 0:
            self.region._corrupt("has a node at %d with a link to offset 0" % self.offset)
        return Node(self.region, off, self.ancestors + (self.offset,))

    def child(self, i):
        """Child `i` (0-based) of a list node."""
        if self.kind != L.KIND_LIST:
            raise NotAList("node at %d is %s, not a list" % (self.offset, L.KIND_NAMES[self.kind]))
        if not 0 <= i < self.length:
            raise OutOfRange("index %d is out of range for a list of length %d" % (i + 1, self.length))
        return self._link(self.region.u64(self.data_offset + 8 * i))

    def names_node(self):
        if self.names_offset == 0:
            return None
        n = self._link(self.names_offset)
        if n.kind != L.KIND_STRINGS or n.length != self.length:
            self.region._corrupt("has a node at %d whose names are not %d strings"
                                 % (self.offset, self.length))
        return n

    def attrs_node(self):
        if self.attrs_offset == 0:
            return None
        a = self._link(self.attrs_offset)
        if a.kind != L.KIND_LIST or a.names_offset == 0 or a.attrs_offset != 0:
            self.region._corrupt("has a node at %d whose attribute list is not a named list "
                                 "without attributes" % self.offset)
        return a

    def attr(self, key):
        """The node of attribute `key`, or None."""
        a = self.attrs_node()
        if a is None:
            return None
        i = a.names_node().index_of(key.encode("utf-8"))
        return None if i is None else a.child(i)

    # --- Strings ------------------------------------------------------------

    def entry(self, i):
        """(bytes, encoding) of string `i` of a strings node; bytes is a
        memoryview into the region, or None for NA."""
        e = self.data_offset + 16 * i
        off, nbytes, enc = L.STRING_ENTRY.unpack_from(self.region._mv, e)
        if nbytes < -1 or enc < 0 or enc > L.ENC_BYTES:
            self.region._corrupt("has a bad entry %d (nbytes %d, encoding %d) in the strings node at %d"
                                 % (i, nbytes, enc, self.offset))
        if nbytes == -1:
            return None, enc
        packed = self.data_offset + L.align64(16 * self.length)
        end = self.data_offset + self.data_size
        if packed + off + nbytes + 1 > end:
            self.region._corrupt("has string %d of the strings node at %d outside its packed bytes"
                                 % (i, self.offset))
        start = packed + off
        if self.region._mv[start + nbytes] != 0:
            self.region._corrupt("has string %d of the strings node at %d without its zero byte"
                                 % (i, self.offset))
        return self.region._mv[start:start + nbytes], enc

    def index_of(self, key):
        """Index of the first string whose bytes are `key`, or None (NA
        matches nothing)."""
        for i in range(self.length):
            b, _ = self.entry(i)
            if b is not None and b == key:
                return i
        return None

    # --- Data ---------------------------------------------------------------

    def data(self):
        """The data block, a read-only memoryview into the region."""
        return self.region._mv[self.data_offset:self.data_offset + self.data_size]

    def array(self):
        """An array node's elements: a read-only numpy view of the region."""
        dt = L.DTYPES[self.dtype][1]
        if self.length == 0:
            a = np.empty(0, dt)
            a.flags.writeable = False
            return a
        return np.frombuffer(self.region.buffer, dt, self.length, self.data_offset)

    def walk(self, visit):
        """Calls visit(node) for this node and every node below it (children,
        names, attribute lists), holding the value to the tree rule of
        docs/format.md section 4.9: a header or a data block reached twice,
        or two pieces that overlap, make the region corrupt. The work is
        bounded by the region's size: a walk stops once it has seen more
        nodes than node_count, or more header and data bytes than the region
        holds (links shared by a damaged region could otherwise make it
        exponential, or quadratic in the size)."""
        seen = 0
        budget = self.region.size
        pieces = []
        stack = [self]
        while stack:
            n = stack.pop()
            seen += 1
            if seen > self.region.node_count:
                self.region._corrupt("holds more nodes than its node_count %d" % self.region.node_count)
            budget -= L.HEADER_SIZE + n.data_size
            if budget < 0:
                self.region._corrupt("holds more header and data bytes than its size: links are shared")
            pieces.append((n.offset, L.HEADER_SIZE))
            if n.data_size:
                pieces.append((n.data_offset, n.data_size))
            visit(n)
            links = []
            if n.names_offset:
                links.append(n.names_node())
            if n.attrs_offset:
                links.append(n.attrs_node())
            if n.kind == L.KIND_LIST:
                links.extend(n.child(i) for i in range(n.length))
            stack.extend(reversed(links))
        pieces.sort()
        for (a, an), (b, _) in zip(pieces, pieces[1:]):
            if a + an > b:
                self.region._corrupt("breaks the tree rule: pieces at %d and %d overlap or are "
                                     "reached twice" % (a, b))
        return seen


def resolve(region, path):
    """The node at the 1-based `path` from the root."""
    node = region.root()
    for i in path:
        if node.kind != L.KIND_LIST:
            raise NotAList("index %d applied to a %s node, not a list" % (i, L.KIND_NAMES[node.kind]))
        if i > node.length:
            raise OutOfRange("index %d is out of range for a list of length %d" % (i, node.length))
        node = node.child(i - 1)
    return node


class _Sequence(Sequence):
    __slots__ = ("_node",)

    def __init__(self, node):
        self._node = node

    def __len__(self):
        return self._node.length

    @property
    def node(self):
        """The checked node this value reads from."""
        return self._node

    @property
    def names(self):
        """The element names, a tuple (None for an NA name), or None."""
        n = self._node.names_node()
        return None if n is None else tuple(Strings(n))

    @property
    def attrs(self):
        """The attributes, a dict of key to value."""
        return attributes(self._node)

    def _index(self, i):
        if not isinstance(i, (int, np.integer)):
            raise TypeError("indices are integers, not %s" % type(i).__name__)
        n = self._node.length
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("index out of range for a %s of length %d" % (type(self).__name__, n))
        return i


def decode(b, enc):
    """One string's bytes in Python: str for UTF-8 and Latin-1, bytes for
    opaque bytes, None for NA."""
    if b is None:
        return None
    if enc == L.ENC_BYTES:
        return bytes(b)
    return str(b, "latin-1" if enc == L.ENC_LATIN1 else "utf-8", "surrogateescape")


class Strings(_Sequence):
    """A strings node: a sequence of str (bytes for opaque strings, None for
    NA), decoded when an element is read."""

    __slots__ = ()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return decode(*self._node.entry(self._index(i)))

    def encoding(self, i):
        """0 (UTF-8), 1 (Latin-1) or 2 (opaque bytes) for element `i`."""
        return self._node.entry(self._index(i))[1]

    def __eq__(self, other):
        if isinstance(other, (Strings, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self):
        shown = self[:10]
        return "kura.Strings(%r%s)" % (shown, ", ..." if len(self) > 10 else "")


class List(_Sequence):
    """A list node: a sequence of values, with names (list["x"] finds the
    first element named x) and attributes. Elements are read when accessed."""

    __slots__ = ()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if isinstance(i, str):
            names = self._node.names_node()
            j = None if names is None else names.index_of(i.encode("utf-8"))
            if j is None:
                raise KeyError(i)
            return value(self._node.child(j))
        return value(self._node.child(self._index(i)))

    def keys(self):
        return self.names or ()

    def __repr__(self):
        names = self.names
        parts = []
        for i in range(min(len(self), 10)):
            label = "%s=" % names[i] if names and names[i] is not None else ""
            parts.append(label + _short(self._node.child(i)))
        more = ", ..." if len(self) > 10 else ""
        return "kura.List([%s%s])" % (", ".join(parts), more)


def _short(node):
    kind = L.KIND_NAMES[node.kind]
    if node.kind == L.KIND_ARRAY:
        return "<%s[%d]>" % (L.DTYPES[node.dtype][0], node.length)
    return "<%s[%d]>" % (kind, node.length)


class Logical(np.ndarray):
    """An lgl array (R's logical): int32 elements 0 (false), 1 (true) or
    NA_INTEGER, as the format stores them."""

    @property
    def na(self):
        """A boolean mask of the NA elements."""
        return np.asarray(self) == L.NA_INTEGER

    def as_bool(self, na=False):
        """The values as a bool array, NA given as `na`."""
        a = np.asarray(self)
        return np.where(a == L.NA_INTEGER, na, a != 0)


class Bytes:
    """A bytes node: `data` (a read-only memoryview into the region when
    mapped) and its `tag` (such as "json", "rds3"; "" for none)."""

    __slots__ = ("tag", "data")

    def __init__(self, data, tag=""):
        self.tag = tag
        self.data = data

    def __bytes__(self):
        return bytes(self.data)

    def __len__(self):
        return len(self.data)

    def __eq__(self, other):
        if isinstance(other, Bytes):
            return self.tag == other.tag and bytes(self.data) == bytes(other.data)
        return NotImplemented

    def __repr__(self):
        return "kura.Bytes(<%d bytes>, tag=%r)" % (len(self.data), self.tag)


def attributes(node):
    """A node's attributes as a dict (key -> value); NA keys are skipped and
    a repeated key keeps its first value."""
    a = node.attrs_node()
    if a is None:
        return {}
    keys = Strings(a.names_node())
    out = {}
    for i, k in enumerate(keys):
        if isinstance(k, str) and k not in out:
            out[k] = value(a.child(i))
    return out


def _classes(node):
    c = node.attr("class")
    if c is None or c.kind != L.KIND_STRINGS:
        return ()
    return tuple(Strings(c))


def _dim(node):
    d = node.attr("dim")
    if d is None or d.kind != L.KIND_ARRAY or d.dtype not in (6, 8) or d.length < 2:
        return None
    dims = [int(x) for x in d.array()]
    if any(x < 0 for x in dims) or int(np.prod(dims, dtype=object)) != node.length:
        return None
    return tuple(dims)


def value(node):
    """A node as a Python value, without copying array data: None (null),
    a read-only numpy array (a Logical for lgl; reshaped in column-major
    order by a `dim` attribute), Strings, List, Bytes, or, for a list with
    class data.frame, a pandas.DataFrame when pandas is importable, else a
    dict of columns."""
    k = node.kind
    if k == L.KIND_NULL:
        return None
    if k == L.KIND_ARRAY:
        a = node.array()
        if node.dtype == L.DTYPE_LGL:
            a = a.view(Logical)
        if node.attrs_offset:
            dims = _dim(node)
            if dims is not None:
                a = a.reshape(dims, order="F")
        return a
    if k == L.KIND_STRINGS:
        return Strings(node)
    if k == L.KIND_BYTES:
        return Bytes(node.data(), node.tag)
    lst = List(node)
    if node.attrs_offset and "data.frame" in _classes(node):
        return _data_frame(lst)
    return lst


def _data_frame(lst):
    names = lst.names or ()
    cols = {}
    for i in range(len(lst)):
        key = names[i] if i < len(names) and names[i] is not None else "V%d" % (i + 1)
        if key not in cols:
            cols[key] = lst[i]
    try:
        import pandas
    except ImportError:
        return cols
    return pandas.DataFrame({k: (list(v) if isinstance(v, Strings) else v) for k, v in cols.items()},
                            copy=False)
