"""The errors of kura, one class per failure of docs/format.md section 7."""


class KuraError(Exception):
    """Base class of every error kura raises."""


class InvalidName(KuraError, ValueError):
    """Text that is not a kura name (docs/format.md section 1)."""


class NotFound(KuraError, FileNotFoundError):
    """A valid name for a region that is not there."""


class CorruptRegion(KuraError):
    """A region that breaks a rule of the format; also an unsupported version."""


class OutOfRange(KuraError, IndexError):
    """An index larger than the list's length."""


class NotAList(KuraError, TypeError):
    """An index applied to a node that is not a list."""


class DirectoryError(KuraError):
    """The region directory is missing or unsafe to use."""


class Refused(KuraError, PermissionError):
    """A kura file that is not this user's private regular file, or a symlink
    where one belongs."""


class NoSpace(KuraError, OSError):
    """The region directory has no room for the region."""
