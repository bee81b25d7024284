"""Regions as files: the region directory, the process's owner and its
lease, publishing, mapping and releasing, following docs/design.md section 3
(the same files and locks as kura's C++ shm/ library, so `kura ls` and
`kura prune` treat Python's regions like any other)."""

import atexit
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import time
import weakref

from . import _layout as L
from ._errors import CorruptRegion, DirectoryError, NoSpace, NotFound, Refused
from ._names import Name, parse_name
from ._reader import Region, resolve, value
from ._writer import layout

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_ALIVE_BYTE = 0  # lease: read-locked by the owner for its whole life
_WRITER_BYTE = 0  # region temporary: write-locked by its writer
# struct flock on Linux (x86-64, arm64): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = struct.Struct("hhqqi4x")
_ATTEMPTS = 16

_dir = None
_dir_lock = threading.Lock()


def _validate(d):
    what = "region directory " + d
    if not d.startswith("/"):
        raise DirectoryError(what + " is not an absolute path (KURA_SHM_DIR takes one)")
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        raise DirectoryError(what + " does not exist (create it, or mount a tmpfs there)") from None
    if stat.S_ISLNK(st.st_mode):
        raise DirectoryError(what + " is a symbolic link; refusing it (name the directory it points to)")
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(what + " is not a directory")
    if st.st_mode & stat.S_ISVTX:
        return
    if st.st_uid != os.geteuid():
        raise DirectoryError("%s belongs to user %d and is not sticky (mode %04o); use a directory of "
                             "your own, or one with mode 1777 like /dev/shm"
                             % (what, st.st_uid, stat.S_IMODE(st.st_mode)))
    if st.st_mode & 0o022:
        raise DirectoryError("%s is writable by group or other without the sticky bit (mode %04o): "
                             "chmod 700 or chmod 1777 it" % (what, stat.S_IMODE(st.st_mode)))


def directory():
    """The region directory: $KURA_SHM_DIR, else /dev/shm; fixed at the
    first use in a process, as in C++, and checked (DirectoryError)."""
    global _dir
    with _dir_lock:
        if _dir is None:
            d = os.environ.get("KURA_SHM_DIR") or "/dev/shm"
            while len(d) > 1 and d.endswith("/"):
                d = d[:-1]
            _dir = d
    _validate(_dir)
    return _dir


def _path(file_name):
    return directory() + "/" + file_name


def _try_lock(fd, kind, start, length):
    """0, or the errno of a failed non-blocking open-file-description lock."""
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
            return 0
        except InterruptedError:
            continue
        except OSError as e:
            return e.errno


def _locked_by_other(fd, at):
    res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, at, 1, 0))
    return _FLOCK.unpack(res)[0] != fcntl.F_UNLCK


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _random_u64():
    return int.from_bytes(os.getrandom(8), "little")


# --- The process's owner ---------------------------------------------------------


class _Owner:
    lock = threading.Lock()
    pid = 0
    owner = 0
    fd = -1
    disowned = set()
    registered = False


def _create_owner():
    """A new owner id and its lease, born locked: made under a private
    temporary name, read-locked on the alive byte, then linked into place."""
    for _ in range(_ATTEMPTS):
        owner, salt = _random_u64(), _random_u64()
        if owner == 0:
            continue
        path = _path("kura_%x.lock" % owner)
        temp = "%s.%x.tmp" % (path, salt)
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, 0o600)
            err = _try_lock(fd, fcntl.F_RDLCK, _ALIVE_BYTE, 1)
            if err:
                raise OSError(err, "cannot lock lease file " + temp)
            if not _same_file(fd, temp):  # a prune removed it before the lock
                os.close(fd)
                continue
            try:
                os.link(temp, path)
            except (FileExistsError, FileNotFoundError):
                os.unlink(temp)
                os.close(fd)
                continue
            os.unlink(temp)
            return owner, fd
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            os.close(fd)
            raise
    raise OSError(errno.EEXIST, "cannot create a lease in %s: %d random owner ids were all taken"
                  % (directory(), _ATTEMPTS))


def process_owner():
    """This process's owner id, made (with its lease) at the first call."""
    directory()
    with _Owner.lock:
        if _Owner.fd >= 0 and _Owner.pid == os.getpid():
            return _Owner.owner
        _Owner.owner, _Owner.fd = _create_owner()
        _Owner.pid = os.getpid()
        if not _Owner.registered:
            _Owner.registered = True
            atexit.register(_clean_up_at_exit)
            os.register_at_fork(after_in_child=_forget_owner_in_child)
        return _Owner.owner


def _forget_owner_in_child():
    # The lease descriptor shares its lock with the parent's: closed here, so
    # the child never keeps a dead parent's owner alive.
    _Owner.lock = threading.Lock()
    if _Owner.fd >= 0:
        os.close(_Owner.fd)
    _Owner.fd, _Owner.owner, _Owner.pid = -1, 0, 0
    _Owner.disowned = set()


def _clean_up_at_exit():
    """At a clean exit: this owner's regions and temporaries that are left
    (but those disowned), then its lease."""
    with _Owner.lock:
        if _Owner.fd < 0 or _Owner.pid != os.getpid():
            return
        d = _dir
        prefix = "kura_%x_" % _Owner.owner
        try:
            files = os.listdir(d)
        except OSError:
            files = []  # the directory is gone, and everything in it
        for f in files:
            if not f.startswith(prefix) or f in _Owner.disowned:
                continue
            rest = f[len(prefix):]
            if rest.endswith(".tmp"):
                rest = rest[:-4]
            if not rest or any(c not in "0123456789abcdef" for c in rest):
                continue
            try:
                st = os.lstat(d + "/" + f)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    os.unlink(d + "/" + f)
            except OSError:
                pass
        lease = "%s/kura_%x.lock" % (d, _Owner.owner)
        if _same_file(_Owner.fd, lease):
            try:
                os.unlink(lease)
            except OSError:
                pass
        os.close(_Owner.fd)
        _Owner.fd, _Owner.owner = -1, 0


# --- Publishing --------------------------------------------------------------------


def _pwrite_all(fd, data, offset):
    mv = memoryview(data).cast("B")
    while len(mv):
        n = os.pwrite(fd, mv, offset)
        mv = mv[n:]
        offset += n


def _release(path, pid):
    if os.getpid() != pid:
        return  # a handle inherited through fork() never unlinks
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Shared:
    """A region this process published. It is unlinked when the handle is
    released, garbage-collected, or at the interpreter's exit (processes
    that mapped it keep their mapping); a handle copied into a forked child
    never unlinks. `name` is what other processes map."""

    def __init__(self, name, size):
        self.name = name
        self.size = size
        self._finalizer = weakref.finalize(self, _release, _path(name[1:]), os.getpid())

    def map(self):
        return map(self.name)

    def release(self):
        """Unlinks the region now (idempotent)."""
        self._finalizer()

    def disown(self):
        """Gives the region up: it stays until `kura rm` or a prune after this
        process is gone. Returns its name."""
        if self._finalizer.detach() is not None:
            with _Owner.lock:
                _Owner.disowned.add(self.name[1:])
        return self.name

    @property
    def alive(self):
        return self._finalizer.alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return "kura.Shared(%r, %d bytes%s)" % (self.name, self.size, "" if self.alive else ", released")


def share(obj):
    """Writes `obj` into a new region, hashed, in the canonical layout, and
    publishes it atomically under this process's owner. See the package
    documentation for how Python values map to kura nodes."""
    owner = process_owner()
    size, pieces = layout(obj, time.time_ns(), os.getpid() & 0xFFFFFFFF)
    for _ in range(_ATTEMPTS):
        counter = _random_u64()
        temp = _path("kura_%x_%x.tmp" % (owner, counter))
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise NoSpace(e.errno, "%s is full" % directory()) from None
            raise
        err = _try_lock(fd, fcntl.F_WRLCK, _WRITER_BYTE, 1)
        if err in (errno.EAGAIN, errno.EACCES) or (not err and not _same_file(fd, temp)):
            os.close(fd)  # a prune holds it, or removed it before our lock
            continue
        try:
            if err:
                raise OSError(err, "cannot lock temporary region " + temp)
            return Shared(_publish(fd, temp, owner, counter, size, pieces), size)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
    raise OSError(errno.EEXIST, "cannot create a region: %d random counters were all taken in %s"
                  % (_ATTEMPTS, directory()))


def _publish(fd, temp, owner, counter, size, pieces):
    os.fchmod(fd, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise NoSpace(e.errno, "cannot create region of %d bytes: %s is full (raise the container's "
                          "--shm-size, or run `kura prune`)" % (size, directory())) from None
        raise
    for off, data in pieces[1:]:
        _pwrite_all(fd, data, off)
    _pwrite_all(fd, pieces[0][1], 0)  # the region header, sealed, last
    os.fchmod(fd, 0o400)
    for _ in range(_ATTEMPTS):
        name = "/kura_%x_%x" % (owner, counter)
        try:
            os.link(temp, _path(name[1:]))
        except FileExistsError:
            counter = _random_u64()
            continue
        os.unlink(temp)
        return name
    raise OSError(errno.EEXIST, "cannot publish a region: %d random names were all taken" % _ATTEMPTS)


# --- Mapping -------------------------------------------------------------------------


def open_region(name):
    """(Region, node) for `name`: the region mapped read-only and checked, and
    the checked node at the name's path."""
    n = parse_name(name) if not isinstance(name, Name) else name
    region_name = n.region
    path = _path(region_name[1:])
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        raise NotFound("region %s does not exist (released by its owner, pruned, or never published; "
                       "see `kura ls`)" % region_name) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Refused("region %s is a symbolic link; refusing it" % region_name) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("region %s is not a regular file; refusing it" % region_name)
        if st.st_uid != os.geteuid():
            raise Refused("region %s belongs to user %d, not to this user" % (region_name, st.st_uid))
        if st.st_mode & 0o077:
            raise Refused("region %s has mode %04o, open to group or other; refusing it"
                          % (region_name, stat.S_IMODE(st.st_mode)))
        if st.st_size < L.HEADER_SIZE:
            raise CorruptRegion("region %s is %d bytes, smaller than a region header"
                                % (region_name, st.st_size))
        mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    region = Region(mm, "region " + region_name)
    return region, resolve(region, n.path)


def map(name):
    """The value at `name` (such as "/kura_1f_2a[2,3]"), read in place from a
    read-only mapping: arrays are numpy views of it. The mapping stays as
    long as any value taken from it. Raises InvalidName, NotFound,
    CorruptRegion, OutOfRange, NotAList."""
    return value(open_region(name)[1])


def node(name):
    """The checked node at `name`: kind, dtype, length, offsets, hash, tag,
    names_node(), attrs_node(), child(i)."""
    return open_region(name)[1]


def verify(name):
    """Recomputes the hash of the node at `name` and of every node below it
    (in a hashed region), and holds them to the tree rule. Returns
    {"hashed": bool, "nodes": count}; raises CorruptRegion on a mismatch."""
    region, top = open_region(name)

    def check(n):
        if region.hashed and L.node_hash(n.header, n.data() if n.data_size else None) != n.hash:
            raise CorruptRegion("region %s: the hash of the node at %d does not match"
                                % (parse_name(name).region, n.offset))

    return {"hashed": region.hashed, "nodes": top.walk(check)}
