"""Python against the other implementations: it reads what the kura tool
(C++) and the R package write, the tool accepts what Python writes, and
both write the same bytes for the same value."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import kura

EVERY_KIND = {"type": "list", "values": [
    {"type": "f64", "values": [1.5, None, "NaN", "-Inf"]},
    {"type": "i32", "values": [1, 2, 3, 4], "attrs": {"dim": {"type": "i32", "values": [2, 2]}}},
    {"type": "strings", "values": ["b", None, {"bytes": "AAE="}, "é"]},
    {"type": "lgl", "values": [True, False, None]},
    {"type": "bytes", "tag": "json", "base64": "e30="},
    {"type": "null"},
    {"type": "u8", "values": [0, 255]},
    {"type": "i8", "values": [-128, 127]},
    {"type": "u16", "values": [0, 65535]},
    {"type": "i16", "values": [-32768, 32767]},
    {"type": "u32", "values": [0, 4294967295]},
    {"type": "i32", "values": [-2147483648, 2147483647]},
    {"type": "u64", "values": [0, 18446744073709551615]},
    {"type": "i64", "values": [-9223372036854775808, 9223372036854775807]},
    {"type": "f32", "values": [0.5, "Inf"]},
    {"type": "c128", "values": [[1.5, None], [0, 1]]},
    {"type": "list", "values": [{"type": "list", "values": []}, {"type": "strings", "values": []}],
     "attrs": {"class": {"type": "strings", "values": ["thing"]}}},
], "names": ["f", "m", "s", "l", "b", "n", "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64",
             "f32", "c128", "deep"]}

NA = kura.NA_REAL


def every_kind_in_python():
    """The value of EVERY_KIND, as Python hands it to kura.share."""
    ints = {k: np.array(v, dtype=k) for k, v in [
        ("u1", [0, 255]), ("i1", [-128, 127]), ("u2", [0, 65535]), ("i2", [-32768, 32767]),
        ("u4", [0, 4294967295]), ("i4", [-2147483648, 2147483647]), ("u8", [0, 2 ** 64 - 1]),
        ("i8", [-2 ** 63, 2 ** 63 - 1])]}
    return {
        "f": np.array([1.5, NA, np.nan, -np.inf]),
        "m": np.array([[1, 3], [2, 4]], dtype="i4"),
        "s": np.array(["b", None, b"\x00\x01", "é"], dtype=object),
        "l": np.array([1, 0, kura.NA_INTEGER], dtype="i4").view(kura.Logical),
        "b": kura.Bytes(b"{}", tag="json"),
        "n": None,
        "u8": ints["u1"], "i8": ints["i1"], "u16": ints["u2"], "i16": ints["i2"],
        "u32": ints["u4"], "i32": ints["i4"], "u64": ints["u8"], "i64": ints["i8"],
        "f32": np.array([0.5, np.inf], dtype="f4"),
        "c128": np.array([complex(1.5, NA), 1j]),
        "deep": kura.Annotated([[], np.array([], dtype="U1")], attrs={"class": "thing"}),
    }


@pytest.fixture
def put(kura_tool, tmp_path):
    """put(typed_json) -> a kept region the kura tool wrote; removed after the test."""
    names = []

    def run(doc):
        f = tmp_path / ("v%d.json" % len(names))
        f.write_text(json.dumps(doc))
        names.append(kura_tool("put", "--keep", str(f)).stdout.strip())
        return names[-1]

    yield run
    for n in names:
        kura_tool("rm", n)


def region_bytes(name):
    with open(os.path.join(kura.directory(), name[1:]), "rb") as f:
        return f.read()


def test_python_reads_what_the_tool_writes(put):
    name = put(EVERY_KIND)
    v = kura.map(name)
    assert v.names == tuple(EVERY_KIND["names"])
    f = v["f"]
    assert f[0] == 1.5 and kura.is_na(f).tolist() == [False, True, False, False] and f[3] == -np.inf
    assert v["m"].shape == (2, 2) and v["m"].tolist() == [[1, 3], [2, 4]]
    assert list(v["s"]) == ["b", None, b"\x00\x01", "é"]
    assert v["l"].na.tolist() == [False, False, True] and v["l"].as_bool().tolist() == [True, False, False]
    assert v["b"] == kura.Bytes(b"{}", tag="json") and v["n"] is None
    for key in ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"]:
        want = [x for x in next(e for e, k in zip(EVERY_KIND["values"], EVERY_KIND["names"])
                                if k == key)["values"]]
        assert v[key].dtype.str[1:] == {"u8": "u1", "i8": "i1", "u16": "u2", "i16": "i2", "u32": "u4",
                                        "i32": "i4", "u64": "u8", "i64": "i8"}[key]
        assert v[key].tolist() == want
    assert v["f32"].dtype == np.float32 and v["f32"].tolist() == [0.5, np.inf]
    c = v["c128"]
    assert c[0].real == 1.5 and kura.is_na(c).tolist() == [True, False] and c[1] == 1j
    assert v["deep"].attrs == {"class": kura.map(name + "[17]").attrs["class"]}
    assert list(v["deep"].attrs["class"]) == ["thing"]
    assert len(v["deep"][0]) == 0 and len(v["deep"][1]) == 0
    assert kura.map(name + "[3]")[3] == "é"
    assert kura.verify(name) == {"hashed": True, "nodes": kura.Region(region_bytes(name)).node_count}


def test_latin1_strings_are_decoded(put):
    name = put({"type": "strings", "values": [{"latin1": "/w=="}, "a"]})
    s = kura.map(name)
    assert list(s) == ["ÿ", "a"] and s.encoding(0) == 1


def test_python_writes_the_bytes_the_tool_writes(put):
    name = put(EVERY_KIND)
    theirs = region_bytes(name)
    r = kura.Region(theirs)
    ours = kura.build(every_kind_in_python(), r.created_ns, r.creator_pid)
    assert len(ours) == len(theirs)
    diff = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    assert not diff, "first differing byte at %d" % diff[0]


def test_golden_value_the_tool_writes_is_the_golden_region(put):
    from conftest import GOLDEN
    name = put({"type": "list", "values": [{"type": "f64", "values": [1.5, 2.5]},
                                           {"type": "strings", "values": ["a"]}], "names": ["x", "tag"]})
    with open(GOLDEN, "rb") as f:
        golden = f.read()
    assert region_bytes(name)[64:] == golden[64:]


def test_the_tool_accepts_what_python_writes(kura_tool):
    with kura.share(every_kind_in_python()) as s:
        r = kura_tool("verify", s.name)
        assert r.returncode == 0
        got = json.loads(kura_tool("get", "--json", s.name).stdout)
        assert got == EVERY_KIND
        assert json.loads(kura_tool("get", "--json", s.name + "[2]").stdout)["values"] == [1, 2, 3, 4]


def test_the_tool_finds_damage_in_what_python_writes(kura_tool, shm_dir):
    data = bytearray(kura.build(every_kind_in_python()))
    off = kura.Region(bytes(data)).root().child(0).data_offset
    data[off] ^= 1
    path = os.path.join(shm_dir, "kura_1f_99")
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o400)
    try:
        assert kura_tool("verify", "/kura_1f_99", check=False).returncode == 4
        with pytest.raises(kura.CorruptRegion):
            kura.verify("/kura_1f_99")
    finally:
        os.unlink(path)


R_WRITER = r"""
suppressPackageStartupMessages(library(kura))
x <- share(list(d = c(1.5, NA), s = c("x", NA, "é"), i = 1:3, l = c(TRUE, NA),
                m = matrix(1:6, 2), df = data.frame(u = 1:2, v = c(0.5, 1.5))))
cat(shared_name(x), "\n", sep = "")
flush(stdout())
invisible(readLines(file("stdin"), n = 1))
"""


def test_python_reads_what_r_writes():
    libs = os.environ.get("KURA_R_LIBS")
    if not libs or shutil.which("Rscript") is None:
        pytest.skip("the R package is not installed (tools/run test sets KURA_R_LIBS)")
    env = dict(os.environ, R_LIBS=libs)
    p = subprocess.Popen(["Rscript", "-e", R_WRITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=env, text=True)
    try:
        name = p.stdout.readline().strip()
        v = kura.map(name)
        assert v.names == ("d", "s", "i", "l", "m", "df")
        assert v["d"][0] == 1.5 and kura.is_na(v["d"]).tolist() == [False, True]
        assert list(v["s"]) == ["x", None, "é"]
        assert v["i"].dtype == np.int32 and v["i"].tolist() == [1, 2, 3]
        assert v["l"].na.tolist() == [False, True]
        assert v["m"].shape == (2, 3) and v["m"][1, 2] == 6
        df = v["df"]
        assert list(df["u"]) == [1, 2] and list(df["v"]) == [0.5, 1.5]
        assert kura.verify(name)["hashed"]
    finally:
        p.communicate("done\n", timeout=60)
    assert p.returncode == 0
