"""The console's vendored JavaScript (scripts/vendor-js): the committed files are the ones
web/package-lock.json pins, and the console's page refers only to its own files."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
VENDOR = ROOT / "collector" / "static" / "vendor"


def manifest() -> dict[str, dict[str, object]]:
    loaded: dict[str, dict[str, object]] = json.loads((WEB / "vendored.json").read_text())
    return loaded


def test_vendored_files_are_the_ones_recorded_from_the_locked_package() -> None:
    lock = json.loads((WEB / "package-lock.json").read_text())
    wanted = json.loads((WEB / "package.json").read_text())["dependencies"]
    recorded = manifest()
    assert set(recorded) == set(wanted), "every dependency of web/package.json is vendored"
    copied: set[str] = set()
    for name, entry in recorded.items():
        locked = lock["packages"][f"node_modules/{name}"]
        assert entry["version"] == locked["version"] == wanted[name], name
        assert entry["integrity"] == locked["integrity"], name
        assert str(locked["integrity"]).startswith("sha512-"), name
        files = entry["files"]
        assert isinstance(files, dict) and files, name
        for path, digest in files.items():
            actual = hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
            assert actual == digest, f"{path} differs from what scripts/vendor-js copied"
            copied.add(path)
    present = {p.relative_to(ROOT).as_posix() for p in VENDOR.iterdir()}
    assert present == copied, "collector/static/vendor/ holds only what scripts/vendor-js copies"
    # the library's own banner names the version the lock pins
    banner = (VENDOR / "uPlot.iife.min.js").read_text()[:80]
    assert f"(v{recorded['uplot']['version']})" in banner


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """What the page loads: every `src`, and a `<link>`'s `href` (an `<a>`'s is a place
        to go, such as the single-sign-on login, not a file the page needs)."""
        loaded = ("src", "href") if tag == "link" else ("src",)
        self.refs += [v for k, v in attrs if k in loaded and v is not None]


def test_the_console_page_loads_only_its_own_files() -> None:
    parser = _Refs()
    parser.feed((ROOT / "collector" / "static" / "index.html").read_text())
    files = [r for r in parser.refs if not r.startswith("#")]
    assert "/console/vendor/uPlot.iife.min.js" in files
    assert "/console/vendor/uPlot.min.css" in files
    for ref in files:
        assert ref.startswith("/") and not ref.startswith("//"), f"{ref} is not a local path"
        name = ref.removeprefix("/console/")
        assert (ROOT / "collector" / "static" / name).is_file(), f"{ref} is not a console file"
