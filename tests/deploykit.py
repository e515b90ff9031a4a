"""What the deploy tests share: where deploy/ is, and its make_certs module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def load_make_certs() -> Any:
    """deploy/make_certs.py as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_certs", DEPLOY / "make_certs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_certs"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module
