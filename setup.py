"""The build of enoc's compiled parts: the collector's C extensions collector._lineproto
and collector._metricsjson (collector/_lineproto.c, collector/_metricsjson.c).

The rest of the package is declared in pyproject.toml. `uv sync` builds the extensions in
place (the editable install), `uv build` into the wheel. They are optional: without a C
compiler or the Python headers the build says so and goes on, and the collector decodes
and formats in pure Python, which it logs at start. ENOC_PURE_PYTHON=1 leaves them out
altogether: `ENOC_PURE_PYTHON=1 uv build --wheel` makes the pure wheel (py3-none-any) of
the site agent's install, which never uses them (deploy/README.md).
"""

import atexit
import os
import shutil
import tempfile

from setuptools import Extension, setup

PURE = os.environ.get("ENOC_PURE_PYTHON", "") not in ("", "0")

# A fresh build directory each time, not ./build: a module removed from the tree must not
# live on in the next wheel from what an earlier build left there.
BUILD = tempfile.mkdtemp(prefix="enoc-build-")
atexit.register(shutil.rmtree, BUILD, ignore_errors=True)

setup(
    ext_modules=[]
    if PURE
    else [
        Extension("collector._lineproto", ["collector/_lineproto.c"], optional=True),
        Extension("collector._metricsjson", ["collector/_metricsjson.c"], optional=True),
    ],
    options={"build": {"build_base": BUILD}},
)
