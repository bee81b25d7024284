"""Names (docs/format.md section 1): parsed and formatted exactly as the C++
parser in core/name.cpp does, with the same limits."""

from typing import NamedTuple, Tuple

from ._errors import InvalidName

MAX_NAME_LENGTH = 1024
MAX_PATH_INDICES = 64
MAX_INDEX = (1 << 63) - 1
_PREFIX = "/kura_"
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")


class Name(NamedTuple):
    """A parsed name: the region's owner id and counter, and the 1-based path."""

    owner: int
    counter: int
    path: Tuple[int, ...] = ()

    @property
    def region(self) -> str:
        """The region part of the name, without the path."""
        return "/kura_%x_%x" % (self.owner, self.counter)

    def __str__(self) -> str:
        return format_name(self)


def _hex_field(s: str, pos: int, what: str):
    start = pos
    while pos < len(s) and s[pos] in _HEX:
        pos += 1
    n = pos - start
    if n == 0:
        raise InvalidName("expected lowercase hex %s at position %d" % (what, start))
    if n > 16:
        raise InvalidName("%s has more than 16 hex digits" % what)
    if n > 1 and s[start] == "0":
        raise InvalidName("%s has a leading zero" % what)
    return int(s[start:pos], 16), pos


def parse_name(s: str) -> Name:
    """Parses `s`; raises InvalidName, with the position of the fault, for
    anything that is not a name."""
    if not isinstance(s, str):
        raise InvalidName("a name is a str, not %s" % type(s).__name__)
    if not s:
        raise InvalidName("empty name")
    if len(s) > MAX_NAME_LENGTH:
        raise InvalidName("name longer than %d characters" % MAX_NAME_LENGTH)
    if not s.startswith(_PREFIX):
        raise InvalidName('name must start with "/kura_"')
    owner, pos = _hex_field(s, len(_PREFIX), "owner id")
    if pos >= len(s) or s[pos] != "_":
        raise InvalidName("expected '_' after the owner id at position %d" % pos)
    counter, pos = _hex_field(s, pos + 1, "counter")
    if pos == len(s):
        return Name(owner, counter)
    if s[pos] != "[":
        raise InvalidName("unexpected character at position %d (expected '[' or the end)" % pos)
    pos += 1
    path = []
    while True:
        start = pos
        if pos >= len(s) or s[pos] not in _DIGITS:
            raise InvalidName("expected an index at position %d" % start)
        if s[pos] == "0":
            raise InvalidName(
                "index at position %d is 0 or has a leading zero (indices are 1-based)" % start)
        while pos < len(s) and s[pos] in _DIGITS:
            pos += 1
        v = int(s[start:pos])
        if v > MAX_INDEX:
            raise InvalidName("index at position %d exceeds 2^63-1" % start)
        if len(path) == MAX_PATH_INDICES:
            raise InvalidName("more than %d indices" % MAX_PATH_INDICES)
        path.append(v)
        if pos >= len(s):
            raise InvalidName("missing ']' at the end")
        if s[pos] == ",":
            pos += 1
            continue
        if s[pos] != "]":
            raise InvalidName(
                "unexpected character at position %d (expected ',' or ']')" % pos)
        pos += 1
        break
    if pos != len(s):
        raise InvalidName("trailing characters after ']' at position %d" % pos)
    return Name(owner, counter, tuple(path))


def format_name(name: Name) -> str:
    """The canonical text of `name`: parse_name(format_name(n)) == n."""
    if not (0 <= name.owner < 1 << 64 and 0 <= name.counter < 1 << 64):
        raise InvalidName("owner id and counter are unsigned 64-bit numbers")
    if len(name.path) > MAX_PATH_INDICES:
        raise InvalidName("more than %d indices" % MAX_PATH_INDICES)
    if any(not 1 <= i <= MAX_INDEX for i in name.path):
        raise InvalidName("indices are 1 to 2^63-1")
    out = name.region
    if name.path:
        out += "[" + ",".join(str(i) for i in name.path) + "]"
    return out
