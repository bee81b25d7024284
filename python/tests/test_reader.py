"""The reader against the golden region of docs/format.md section 8 and
against damaged regions: every fault is a CorruptRegion, never another
exception, a crash or a read outside the buffer."""

import struct

import numpy as np
import pytest

import kura
from kura import _layout as L
from kura._reader import resolve, value

from conftest import GOLDEN, plant


def golden():
    with open(GOLDEN, "rb") as f:
        return f.read()


def deep(v):
    """Reads every element of a value (what a full conversion does)."""
    if isinstance(v, kura.List):
        _ = v.names, v.attrs
        return [deep(x) for x in v]
    if isinstance(v, kura.Strings):
        _ = v.names, v.attrs
        return list(v)
    if isinstance(v, dict):
        return {k: deep(x) for k, x in v.items()}
    if isinstance(v, kura.Bytes):
        return bytes(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def test_golden_region_is_reproduced_byte_for_byte():
    assert kura.build({"x": np.array([1.5, 2.5]), "tag": "a"}) == golden()


def test_golden_region_reads_by_name(shm_dir):
    path = plant(shm_dir, "/kura_1f_2a", golden())
    try:
        v = kura.map("/kura_1f_2a")
        assert isinstance(v, kura.List) and v.names == ("x", "tag")
        assert v["x"].tolist() == [1.5, 2.5] and v["x"].dtype == np.float64
        assert list(v["tag"]) == ["a"]
        assert kura.map("/kura_1f_2a[1]").tolist() == [1.5, 2.5]
        assert kura.map("/kura_1f_2a[2]")[0] == "a"
        with pytest.raises(kura.NotAList):
            kura.map("/kura_1f_2a[2,1]")
        with pytest.raises(kura.OutOfRange):
            kura.map("/kura_1f_2a[3]")
        assert kura.verify("/kura_1f_2a") == {"hashed": True, "nodes": 4}
        n = kura.node("/kura_1f_2a[1]")
        assert (n.offset, n.data_offset, n.hash) == (384, 448, 0x5C0AB707D7CE2BA3)
    finally:
        import os
        os.unlink(path)


def test_not_found():
    with pytest.raises(kura.NotFound):
        kura.map("/kura_1_12345")


def test_arrays_are_read_only_views():
    r = kura.Region(golden())
    a = value(resolve(r, (1,)))
    assert not a.flags.writeable and not a.flags.owndata
    with pytest.raises(ValueError):
        a[0] = 3


def corrupt_header(data, **fields):
    """`data` with region header fields replaced and the hash recomputed."""
    names = ["magic", "version", "flags", "region_size", "root_offset", "node_count", "created_ns",
             "creator_pid", "r1", "r2", "header_hash"]
    vals = dict(zip(names, L.REGION_HEADER.unpack_from(data, 0)))
    vals.update(fields)
    h = L.REGION_HEADER.pack(*[vals[n] for n in names])
    h = h[:56] + L.header_hash(h).to_bytes(8, "little")
    return h + data[64:]


def set_u64(data, at, v):
    b = bytearray(data)
    struct.pack_into("<Q", b, at, v)
    return bytes(b)


def set_bytes(data, at, v):
    b = bytearray(data)
    b[at:at + len(v)] = v
    return bytes(b)


CASES = {
    "short": lambda g: g[:63],
    "magic": lambda g: corrupt_header(g, magic=b"KURX"),
    "version": lambda g: corrupt_header(g, version=2),
    "hash": lambda g: set_bytes(g, 56, b"\0"),
    "unsealed": lambda g: corrupt_header(g, flags=2),
    "flag": lambda g: corrupt_header(g, flags=7),
    "size": lambda g: corrupt_header(g, region_size=768),
    "truncated": lambda g: g[:640],
    "root unaligned": lambda g: corrupt_header(g, root_offset=65),
    "root past end": lambda g: corrupt_header(g, root_offset=704),
    "node_count": lambda g: corrupt_header(g, node_count=12),
    "node magic": lambda g: set_bytes(g, 64, b"XNOD"),
    "kind": lambda g: set_bytes(g, 68, b"\x05"),
    "node flags": lambda g: set_bytes(g, 70, b"\x01"),
    "dtype 0": lambda g: set_bytes(g, 389, b"\x00"),
    "dtype 13": lambda g: set_bytes(g, 389, b"\x0d"),
    "dtype on list": lambda g: set_bytes(g, 69, b"\x01"),
    "tag on array": lambda g: set_bytes(g, 384 + 56, b"x"),
    "array length": lambda g: set_u64(g, 384 + 8, 3),
    "array huge length": lambda g: set_u64(g, 384 + 8, 1 << 61),
    "data past end": lambda g: set_u64(g, 384 + 16, 704),
    "data unaligned": lambda g: set_u64(g, 384 + 16, 449),
    "data offset 0": lambda g: set_u64(g, 384 + 16, 0),
    "child to 0": lambda g: set_u64(g, 128, 0),
    "child to itself": lambda g: set_u64(g, 128, 64),
    "child unaligned": lambda g: set_u64(g, 128, 100),
    "child past end": lambda g: set_u64(g, 136, 1 << 63),
    "names wrong kind": lambda g: set_u64(g, 96, 384),
    "names wrong length": lambda g: set_u64(g, 192 + 8, 1),
    "string past packed": lambda g: set_u64(g, 576, 70),
    "string no zero": lambda g: set_bytes(g, 641, b"b"),
    "string nbytes": lambda g: set_bytes(g, 584, struct.pack("<i", -2)),
    "string long": lambda g: set_bytes(g, 584, struct.pack("<i", 1 << 30)),
    "string encoding": lambda g: set_bytes(g, 588, b"\x03"),
    "strings table too big": lambda g: set_u64(g, 512 + 8, 5),
    "attrs not a list": lambda g: set_u64(g, 384 + 40, 512),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damage_is_a_corrupt_region(case):
    data = CASES[case](golden())
    with pytest.raises(kura.CorruptRegion):
        deep(value(kura.Region(data).root()))


def test_unsupported_version_says_so():
    with pytest.raises(kura.CorruptRegion, match="unsupported version 2"):
        kura.Region(corrupt_header(golden(), version=2))


def test_every_flipped_byte_reads_or_is_corrupt():
    g = golden()
    for i in range(len(g)):
        for bit in (0x01, 0x80):
            b = bytearray(g)
            b[i] ^= bit
            try:
                deep(value(kura.Region(bytes(b)).root()))
            except kura.CorruptRegion:
                pass


def test_a_cycle_is_corrupt():
    # The list's second child points back at the root.
    with pytest.raises(kura.CorruptRegion, match="ancestor"):
        deep(value(kura.Region(set_u64(golden(), 136, 64)).root()))


def test_depth_is_bounded():
    v = None
    for _ in range(65):
        v = [v]
    with pytest.raises(ValueError, match="deeper than 64"):
        kura.build(v)
    v = None
    for _ in range(64):
        v = [v]
    r = kura.Region(kura.build(v))
    n = r.root()
    for _ in range(64):
        n = n.child(0)
    assert n.kind == L.KIND_NULL


def test_shared_links_cannot_make_a_walk_exponential():
    # 30 nested lists of two children, each pair pointing at one node: a
    # value of 2^30 nodes described in a few kilobytes.
    v = None
    for _ in range(30):
        v = [v, None]
    data = bytearray(kura.build(v))
    r = kura.Region(bytes(data))
    n, offsets = r.root(), []
    while n.kind == L.KIND_LIST:
        offsets.append(n.data_offset)
        n = n.child(0)
    for d in offsets:
        struct.pack_into("<Q", data, d + 8, struct.unpack_from("<Q", data, d)[0])
    r = kura.Region(bytes(data))
    with pytest.raises(kura.CorruptRegion):
        r.root().walk(lambda n: None)
    with pytest.raises(kura.CorruptRegion):
        kura.share(value(r.root()))


def test_a_walk_reads_no_more_than_the_region_holds():
    # Nine nulls and one large array, then every link pointed at the array.
    data = bytearray(kura.build([None] * 9 + [np.zeros(4096)]))
    r = kura.Region(bytes(data))
    root = r.root()
    big = struct.unpack_from("<Q", data, root.data_offset + 8 * 9)[0]
    for i in range(9):
        struct.pack_into("<Q", data, root.data_offset + 8 * i, big)
    hashed = []
    with pytest.raises(kura.CorruptRegion, match="more header and data bytes"):
        kura.Region(bytes(data)).root().walk(hashed.append)
    assert len(hashed) < 3


def test_verify_finds_a_changed_payload(shm_dir):
    import os
    data = set_bytes(golden(), 448, struct.pack("<d", 1.75))
    path = plant(shm_dir, "/kura_1f_2b", data)
    try:
        assert kura.map("/kura_1f_2b[1]").tolist() == [1.75, 2.5]  # reading does not hash
        with pytest.raises(kura.CorruptRegion, match="hash"):
            kura.verify("/kura_1f_2b")
        assert kura.verify("/kura_1f_2b[2]")["nodes"] == 1
    finally:
        os.unlink(path)


def test_refuses_a_region_open_to_others(shm_dir):
    import os
    path = plant(shm_dir, "/kura_1f_2c", golden())
    os.chmod(path, 0o444)
    try:
        with pytest.raises(kura.Refused):
            kura.map("/kura_1f_2c")
    finally:
        os.unlink(path)
