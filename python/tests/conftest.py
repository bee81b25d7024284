"""Shared set-up of the Python tests: the package from this source tree, a
private region directory (tools/run test gives one in KURA_SHM_DIR; a run
without it makes one and checks it is empty at the end), the kura tool."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
TOP = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)

_own_dir = None
if not os.environ.get("KURA_SHM_DIR"):
    _own_dir = tempfile.mkdtemp(prefix="kura-pytest.", dir="/dev/shm")
    os.chmod(_own_dir, 0o700)
    os.environ["KURA_SHM_DIR"] = _own_dir

import kura  # noqa: E402 (after the region directory is set)


def pytest_sessionfinish(session, exitstatus):
    if _own_dir is not None:
        kura._shm._clean_up_at_exit()  # what the interpreter's exit would do, before the check
        left = os.listdir(_own_dir)
        shutil.rmtree(_own_dir, ignore_errors=True)
        if left:
            print("\nkura tests left entries in their region directory: %s" % left, file=sys.stderr)
            session.exitstatus = 1


@pytest.fixture
def shm_dir():
    return os.environ["KURA_SHM_DIR"]


@pytest.fixture
def kura_tool():
    """Runs the kura tool (KURA_TOOL, else build/tools/kura): tool(*args) ->
    CompletedProcess with text output."""
    path = os.environ.get("KURA_TOOL") or os.path.join(TOP, "build", "tools", "kura")
    if not os.access(path, os.X_OK):
        pytest.skip("the kura tool is not built (%s)" % path)

    def run(*args, input=None, check=True):
        r = subprocess.run([path, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("kura %s exited %d: %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    return run


GOLDEN = os.path.join(TOP, "tests", "data", "example-v1.bin")


def plant(shm_dir, name, data):
    """Writes `data` as the region file of `name` (mode 0400), as a writer
    would have published it; returns its path."""
    path = os.path.join(shm_dir, name.lstrip("/"))
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o400)
    return path


def child_python(code):
    """A Python process running `code` with this package and this region
    directory; stdin and stdout are pipes."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n%s" % (PYTHON_DIR, code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
