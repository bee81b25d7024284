"""The package installs offline with Debian's pip and setuptools, and says
its licence."""

import os
import shutil
import subprocess
import sys

from conftest import PYTHON_DIR


def test_pip_install_offline_into_a_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PYTHON_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
                        "--disable-pip-version-check", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import kura, importlib.metadata as m; print(kura.__file__); "
            "print(m.metadata('kura')['License'])")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(tmp_path)).stdout.split("\n")
    assert out[0].startswith(str(venv)) and out[1] == "MIT"
    with open(os.path.join(PYTHON_DIR, "LICENSE")) as a, \
            open(os.path.join(os.path.dirname(PYTHON_DIR), "LICENSE")) as b:
        assert a.read() == b.read(), "python/LICENSE must be a copy of the project's LICENSE"


def test_version_is_the_projects():
    import re

    import kura
    top = os.path.dirname(PYTHON_DIR)
    with open(os.path.join(top, "CMakeLists.txt")) as f:
        project = re.search(r"project\(kura VERSION ([0-9.]+)", f.read()).group(1)
    with open(os.path.join(PYTHON_DIR, "pyproject.toml")) as f:
        declared = re.search(r'^version = "([0-9.]+)"', f.read(), re.M).group(1)
    assert kura.__version__ == declared == project
