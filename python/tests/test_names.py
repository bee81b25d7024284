import pytest

import kura

VALID = ["/kura_0_0", "/kura_1f_2a", "/kura_ffffffffffffffff_1", "/kura_1f_2a[2,3]",
         "/kura_1_1[9223372036854775807]", "/kura_1_1[" + ",".join(["1"] * 64) + "]"]
INVALID = ["", "kura_1_2", "/kura_1F_2", "/kura_01_2", "/kura_1_02", "/kura_1", "/kura_1_",
           "/kura__1", "/kura_1_2[]", "/kura_1_2[0]", "/kura_1_2[01]", "/kura_1_2[1,]",
           "/kura_1_2[1", "/kura_1_2[1] ", "/kura_1_2 ", "/kura_1_2/x", "/kura_1_2[1]x",
           "/kura_1_2[9223372036854775808]", "/kura_10000000000000000_1", "/kura_1_2[ 1]",
           "/kura_1_2[" + ",".join(["1"] * 65) + "]", "/kura_1_" + "1" * 1100, "/kura_1_2[-1]",
           "/kura_1_2[1]]", "/kura_1_2[1][2]", "/kura_1_2[١]"]


@pytest.mark.parametrize("text", VALID)
def test_valid_names_round_trip(text):
    n = kura.parse_name(text)
    assert kura.format_name(n) == text
    assert str(n) == text


@pytest.mark.parametrize("text", INVALID)
def test_invalid_names_are_refused(text):
    with pytest.raises(kura.InvalidName):
        kura.parse_name(text)


def test_parts():
    n = kura.parse_name("/kura_1f_2a[2,3]")
    assert (n.owner, n.counter, n.path, n.region) == (0x1F, 0x2A, (2, 3), "/kura_1f_2a")


def test_map_refuses_invalid_name_before_any_file_access():
    with pytest.raises(kura.InvalidName):
        kura.map("/kura_1_2/../../etc/passwd")


@pytest.mark.parametrize("text", VALID + INVALID)
def test_the_tool_parses_names_the_same_way(text, kura_tool):
    # Exit code 2 is an invalid name, 3 a valid name for a region that is not there.
    rc = kura_tool("get", "--", text, check=False).returncode
    assert rc == (3 if text in VALID else 2), "kura get %r exited %d" % (text, rc)
