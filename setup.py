"""Only a guard: the project is described in pyproject.toml.

pip on an older Python reads the dependencies before it weighs `requires-python`, and so says
"No matching distribution found for watchdog>=7.0" instead of what is wrong. This runs first.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - the very check this file is for
    sys.exit(f"task-pulse needs Python 3.11 or newer (this is Python {sys.version.split()[0]})")

from setuptools import setup  # noqa: E402 - only once the version is known to be enough

setup()
