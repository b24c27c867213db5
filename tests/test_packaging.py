"""What a packager sees: a complete sdist that can test itself, and a wheel that shadows no one's import name."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One worker builds for the whole module (two would race in the checkout's build dirs): see pyproject.toml.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sdist built from this checkout, and what the build printed."""
    out = tmp_path_factory.mktemp("sdist")
    proc = run(sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, ROOT)
    (archive,) = out.glob("task_pulse-*.tar.gz")
    return archive, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(sdist: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the unpacked sdist, as pip would build it."""
    work = tmp_path_factory.mktemp("wheel")
    with tarfile.open(sdist[0]) as tar:
        tar.extractall(work, filter="data")
    (source,) = work.glob("task_pulse-*")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist", source)
    (built,) = (work / "dist").glob("task_pulse-*.whl")
    return built


def test_the_sdist_carries_its_tests_unit_and_licence(sdist: tuple[Path, str]) -> None:
    archive, log = sdist
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("tests/__init__.py", "tests/conftest.py", "tests/benchmarks/writer_cost.py",
                   "tests/standins/systemctl", "systemd/task-pulsed.service", "systemd/task-pulse-board.service",
                   "LICENSE",
                   "task_pulse/skill/references/integration-guide.md", "docs/task-file.md", "setup.py"):
        assert needed in names, needed
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert "deprecated" not in log.lower() and "is not listed" not in log, log


def test_pytest_collects_in_the_unpacked_sdist(sdist: tuple[Path, str], tmp_path: Path) -> None:
    with tarfile.open(sdist[0]) as tar:
        tar.extractall(tmp_path, filter="data")
    (source,) = tmp_path.glob("task_pulse-*")
    proc = run(sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=source)
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d{3,} tests collected in [\d.]+s", last), last  # no "N errors" on that line


def test_the_wheel_carries_every_module_under_our_two_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        shipped = {n for n in whl.namelist() if n.endswith(".py")}
    ours = {str(p.relative_to(ROOT)) for p in (ROOT / "task_pulse").rglob("*.py")}
    ours |= {"task_pulsed/" + str(p.relative_to(ROOT / "daemon")) for p in (ROOT / "daemon").rglob("*.py")}
    assert shipped == ours
    assert {n.split("/")[0] for n in shipped} == {"task_pulse", "task_pulsed"}  # no top-level `daemon`


def test_the_wheel_carries_the_units_and_the_boards_page(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        board_unit = whl.read("task_pulse/task-pulse-board.service").decode()
    assert {"task_pulse/task-pulsed.service", "task_pulse/board/static/index.html", "task_pulse/board/static/board.js",
            "task_pulse/board/static/board.css", "task_pulse/board/static/login.html"} <= names
    assert "ExecStart=@COMMAND@" in board_unit  # the template itself, not the symlink's name


@pytest.fixture(scope="module")
def python_daemon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """python-daemon's wheel (and its dependency's), fetched once from the package index."""
    house = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "--dest",
                           str(house), "python-daemon"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"python-daemon cannot be fetched here (no package index?): {proc.stderr.strip()[-200:]}")
    return house


@pytest.mark.parametrize("order", ["ours-first", "python-daemon-first"])
def test_installs_beside_python_daemon_in_either_order(wheel: Path, python_daemon: Path, tmp_path: Path,
                                                       order: str) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index"]
    ours = [*pip, "--no-deps", wheel]
    theirs = [*pip, "--find-links", python_daemon, "python-daemon"]
    for step in ([ours, theirs] if order == "ours-first" else [theirs, ours]):
        run(*step)
    both = "import daemon, task_pulsed; from daemon import DaemonContext; print(daemon.__file__, task_pulsed.__file__)"
    daemon_file, ours_file = run(python, "-c", both, cwd=tmp_path).stdout.split()  # not from this checkout
    assert "/daemon/" in daemon_file and "/task_pulsed/" in ours_file
    run(sys.executable, "-m", "pip", "--python", python, "uninstall", "--yes", "--quiet", "task-pulse")
    run(python, "-c", "from daemon import DaemonContext", cwd=tmp_path)  # removing us leaves python-daemon whole


def _python_310() -> str | None:
    """A Python 3.10 on this machine (Ubuntu 22.04's python3), if there is one."""
    candidates = [*map(str, sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))), "python3.10"]
    for candidate in candidates:  # (pyenv's shim on the PATH may name a Python it will not run)
        try:
            if subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=60).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


def test_an_install_on_python_3_10_says_what_is_wrong(tmp_path: Path) -> None:
    """pip on 3.10 said "No matching distribution found for watchdog>=7.0": it reads the dependencies
    before `requires-python`. setup.py runs before either and says it in our words."""
    python = _python_310()
    if python is None:
        pytest.skip("no Python 3.10 here (python3.10 on the PATH, or ~/.pyenv/versions/3.10*)")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    run(python, "-m", "venv", tmp_path / "venv")
    proc = subprocess.run([str(tmp_path / "venv" / "bin" / "pip"), "install", "--no-index", "--no-build-isolation",
                           "--no-deps", str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "task-pulse needs Python 3.11 or newer (this is Python 3.10." in proc.stdout + proc.stderr, proc.stderr
