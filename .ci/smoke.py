"""Smoke test of an INSTALLED shmdict (a wheel), run by .ci/wheel and by
cibuildwheel's test step: ``python .ci/smoke.py PROJECT_DIR``.

It checks that the shmdict imported is the installed one, not the source tree;
that every compiled module inside it carries this interpreter's own extension
suffix (so the wheel's cpXY-cpXY tag tells the truth); then runs the CLI
(``--version``, the multi-process ``demo``) and a few test files, copied out of
PROJECT_DIR/tests so the source tree never shadows the installed package.
"""

import importlib.machinery
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEST_FILES = ["test_smoke.py", "test_mapping.py", "test_ttl.py", "test_multiprocess.py"]


def main() -> int:
    project = Path(sys.argv[1]).resolve()
    work = Path(tempfile.mkdtemp(prefix="shmdict-smoke-"))
    env = dict(os.environ, SHMDICT_DIR=str(work / "dicts"))
    os.mkdir(work / "dicts")
    os.chdir(work)  # never the source tree: its shmdict/ would shadow the installed one
    try:
        import shmdict

        pkg = Path(shmdict.__file__).resolve().parent
        if project in pkg.parents or pkg.parent == project:
            sys.exit(f"smoke: imported shmdict from the source tree ({pkg}), not the installed one")
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-312-x86_64-linux-gnu.so
        modules = sorted(p.name for p in pkg.iterdir() if p.name.endswith(".so"))
        if not modules or any(not m.endswith(suffix) for m in modules):
            sys.exit(f"smoke: compiled modules {modules} do not all end in {suffix}")
        print(f"smoke: shmdict {shmdict.__version__} from {pkg}; modules {', '.join(modules)}")
        cli = [sys.executable, "-m", "shmdict"]
        subprocess.run([*cli, "--version"], check=True, env=env)
        subprocess.run([*cli, "demo"], check=True, env=env, stdout=subprocess.DEVNULL)
        print("smoke: shmdict demo: totals exact")
        shutil.copytree(project / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             *(f"tests/{t}" for t in TEST_FILES)],
            env=env, check=False,
        ).returncode
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
