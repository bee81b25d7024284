"""kura.share and kura.map in one process and across processes: values of
every kind round-trip, arrays are views of the mapping (zero copies), and
regions live and die by the lease protocol of docs/design.md."""

import gc
import os
import signal
import sys

import numpy as np
import pytest

import kura

from conftest import child_python

DTYPES = ["u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "c16"]


def region_files(shm_dir, owner=None):
    return sorted(f for f in os.listdir(shm_dir)
                  if f.startswith("kura_") and not f.endswith(".lock")
                  and (owner is None or f.startswith("kura_%x_" % owner)))


@pytest.mark.parametrize("dt", DTYPES)
def test_every_dtype_round_trips(dt):
    info = np.iinfo(dt) if np.dtype(dt).kind in "ui" else None
    a = np.array([info.min, 0, info.max] if info else [1.5, -0.0, np.inf], dtype=dt)
    with kura.share(a) as s:
        b = kura.map(s.name)
        assert b.dtype == np.dtype(dt) and not b.flags.writeable
        assert a.tobytes() == b.tobytes()


def test_values_of_every_kind_round_trip():
    na = kura.NA_REAL
    value = {
        "f64": np.array([1.5, na, np.nan]),
        "lgl": np.array([True, False]),
        "lgl na": np.array([1, 0, kura.NA_INTEGER], dtype="i4").view(kura.Logical),
        "strings": np.array(["α", None, b"\x00\xff"], dtype=object),
        "matrix": np.arange(6, dtype="i4").reshape(2, 3),
        "bytes": b"\x00raw",
        "tagged": kura.Bytes(b"{}", tag="json"),
        "empty": np.array([], dtype="f8"),
        "no strings": np.array([], dtype="U1"),
        "nested": [None, [1, "x"], {"k": 2.5}],
        "scalars": [True, 7, 2 ** 64 - 1, 1.25, 1 + 2j, "s"],
        "units": kura.Annotated(np.arange(3.0), names=["a", "b", "c"], attrs={"units": "m"}),
    }
    with kura.share(value) as s:
        v = kura.map(s.name)
        assert v.names == tuple(value)
        f = v["f64"]
        assert f[0] == 1.5 and kura.is_na(f).tolist() == [False, True, False] and np.isnan(f[2])
        assert isinstance(v["lgl"], kura.Logical) and v["lgl"].as_bool().tolist() == [True, False]
        assert v["lgl na"].na.tolist() == [False, False, True]
        assert list(v["strings"]) == ["α", None, b"\x00\xff"]
        assert v["strings"].encoding(2) == 2
        m = v["matrix"]
        assert m.shape == (2, 3) and (m == np.arange(6).reshape(2, 3)).all() and not m.flags.owndata
        assert bytes(v["bytes"]) == b"\x00raw" and v["bytes"].tag == ""
        assert v["tagged"] == kura.Bytes(b"{}", tag="json")
        assert v["empty"].size == 0 and len(v["no strings"]) == 0
        nested = v["nested"]
        assert nested[0] is None and nested[1][0][0] == 1 and nested[1][1][0] == "x"
        assert nested[2]["k"][0] == 2.5
        sc = v["scalars"]
        assert [sc[i].dtype.str for i in range(5)] == ["<i4", "<i8", "<u8", "<f8", "<c16"]
        assert sc[0].tolist() == [1] and sc[2][0] == 2 ** 64 - 1 and sc[5][0] == "s"
        assert v["units"].tolist() == [0, 1, 2]
        assert kura.node(s.name + "[12]").attr("units") is not None
        assert list(kura.map(s.name + "[12]").tolist()) == [0.0, 1.0, 2.0]
        # A mapped value shares again as the same bytes (the created stamp aside).
        again = kura.share(v)
        assert kura.verify(again.name)["nodes"] == kura.verify(s.name)["nodes"]
        with open(os.path.join(kura.directory(), again.name[1:]), "rb") as a, \
                open(os.path.join(kura.directory(), s.name[1:]), "rb") as b:
            assert a.read()[64:] == b.read()[64:]
        again.release()


@pytest.mark.parametrize("with_pandas", [True, False])
def test_data_frame(shm_dir, with_pandas, monkeypatch):
    if with_pandas:
        pytest.importorskip("pandas")
    else:
        monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
    df = kura.data_frame({"a": np.arange(3, dtype="i4"), "b": np.array(["x", "y", None], dtype=object)})
    with kura.share(df) as s:
        v = kura.map(s.name)
        if not with_pandas:
            assert isinstance(v, dict) and list(v) == ["a", "b"]
            assert v["a"].tolist() == [0, 1, 2] and list(v["b"]) == ["x", "y", None]
        else:
            assert list(v.columns) == ["a", "b"] and v["a"].tolist() == [0, 1, 2]
            assert v["b"].tolist() == ["x", "y", None]
            # The numeric column is the mapping's memory, not a copy.
            col = v["a"].to_numpy()
            assert mapping_of(col.__array_interface__["data"][0])[2] == os.path.join(shm_dir, s.name[1:])
        lst = kura.open_region(s.name)[1]
        assert kura._reader.attributes(lst)["row.names"].tolist() == [kura.NA_INTEGER, -3]


def test_refuses_what_it_cannot_write():
    with pytest.raises(TypeError):
        kura.build(object())
    with pytest.raises(TypeError):
        kura.build(np.array([1], dtype="f2"))
    with pytest.raises(TypeError):
        kura.build({1: 2})
    with pytest.raises(ValueError):
        kura.build(kura.Bytes(b"", tag="too long tag"))
    with pytest.raises(ValueError):
        kura.build(kura.Annotated([1], names=["a", "b"]))
    with pytest.raises(OverflowError):
        kura.build(2 ** 64)


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def mapping_of(address):
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return lo, hi, line.split()[-1]
    raise AssertionError("address %x is in no mapping" % address)


def test_zero_copy(shm_dir):
    n = 8 << 20  # 64 MiB of f64
    size = n * 8
    s = kura.share(np.ones(n))  # written with pwrite: not mapped here
    gc.collect()
    rss0, anon0 = status_kb("VmRSS"), status_kb("RssAnon")
    a = kura.map(s.name)
    rss1 = status_kb("VmRSS")
    lo, hi, path = mapping_of(a.__array_interface__["data"][0])
    assert path == os.path.join(shm_dir, s.name[1:])
    assert lo <= a.__array_interface__["data"][0] and a.__array_interface__["data"][0] + size <= hi
    assert rss1 - rss0 < 4096, "mapping grew resident memory by %d KiB" % (rss1 - rss0)
    assert a.sum() == n  # reads every page
    anon1, shmem1 = status_kb("RssAnon"), status_kb("RssShmem")
    assert anon1 - anon0 < 8192, "reading the array made %d KiB of private memory" % (anon1 - anon0)
    assert shmem1 * 1024 >= size * 0.9
    print("zero copy: %d MiB array; VmRSS +%d KiB after map, RssAnon +%d KiB after reading it all, "
          "RssShmem %d KiB" % (size >> 20, rss1 - rss0, anon1 - anon0, shmem1))
    del a
    s.release()


def test_release_collect_and_disown(shm_dir):
    s = kura.share([1, 2])
    path = os.path.join(shm_dir, s.name[1:])
    assert oct(os.stat(path).st_mode & 0o777) == "0o400"
    v = kura.map(s.name)
    s.release()
    assert not os.path.exists(path)
    assert v[0][0] == 1  # a mapping outlives the unlink
    s = kura.share("x")
    path = os.path.join(shm_dir, s.name[1:])
    del s
    gc.collect()
    assert not os.path.exists(path)
    s = kura.share("kept")
    name = s.disown()
    del s
    gc.collect()
    assert kura.map(name)[0] == "kept"
    os.unlink(os.path.join(shm_dir, name[1:]))


def test_a_forked_child_has_its_own_owner_and_never_unlinks_the_parents(shm_dir):
    s = kura.share(1.0)
    me = kura.process_owner()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = kura.process_owner() != me
        s.release()
        del s
        gc.collect()
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    assert os.path.exists(os.path.join(shm_dir, s.name[1:]))
    s.release()


def test_exit_removes_what_is_left(shm_dir):
    p = child_python("import kura\na = kura.share(1)\nb = kura.share([2])\nprint(kura.process_owner())\n")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    owner = int(out)
    assert region_files(shm_dir, owner) == []
    assert not os.path.exists(os.path.join(shm_dir, "kura_%x.lock" % owner))


def test_kill_leaves_an_orphan_that_prune_removes(shm_dir, kura_tool):
    import json
    p = child_python("import kura\ns = kura.share([1.5])\nprint(s.name, flush=True)\nsys.stdin.read()\n")
    name = p.stdout.readline().strip()
    try:
        regions = {r["name"]: r for r in json.loads(kura_tool("ls", "--json").stdout)["regions"]}
        assert regions[name]["alive"] is True
        assert kura_tool("prune").returncode == 0
        assert os.path.exists(os.path.join(shm_dir, name[1:]))  # a live owner's region stays
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    regions = {r["name"]: r for r in json.loads(kura_tool("ls", "--json").stdout)["regions"]}
    assert regions[name]["alive"] is False
    kura_tool("prune")
    owner = kura.parse_name(name).owner
    assert region_files(shm_dir, owner) == []
    assert not os.path.exists(os.path.join(shm_dir, "kura_%x.lock" % owner))
