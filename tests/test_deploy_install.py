"""The self-contained install of deploy/README.md: a wheel plus the hash-locked requirements
from uv.lock, into a fresh virtual environment, gives a working `enoc` with the console's
files, outside this checkout. The agent's wheel is pure Python (ENOC_PURE_PYTHON=1 at
build time: no C extension, which the agent never uses); a plain build compiles the
collector's extension in."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from deploykit import REPO

from collector import lineproto
from enoc.pki import make_pki

pytestmark = pytest.mark.servers


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_and_locked_requirements_install_and_run(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    dist = tmp_path / "dist"
    pure = {**os.environ, "ENOC_PURE_PYTHON": "1"}
    built = subprocess.run(
        [uv, "build", "--wheel", "-o", str(dist)],
        cwd=REPO,
        env=pure,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("enoc-*.whl")
    assert wheel.name == "enoc-0.1.0-py3-none-any.whl", "as deploy/README.md names it"
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    requirements = dist / "requirements.txt"
    run(
        uv,
        *("export", "--frozen", "--no-dev", "--no-emit-project", "-o", str(requirements)),
        cwd=REPO,
    )
    assert "--hash=sha256:" in requirements.read_text()
    venv = tmp_path / "venv"
    site = tmp_path / "site"  # somewhere that is not this checkout
    site.mkdir()
    run(uv, "venv", "--quiet", str(venv), cwd=site)
    env_python = str(venv / "bin" / "python")
    run(
        uv,
        "pip",
        "install",
        "--python",
        env_python,
        "--require-hashes",
        "-r",
        str(requirements),
        cwd=site,
    )
    run(uv, "pip", "install", "--python", env_python, "--no-deps", str(wheel), cwd=site)
    enoc = str(venv / "bin" / "enoc")
    help_text = run(enoc, "--help", cwd=site).stdout
    for command in ("agent", "collector", "demo", "check-config", "passwd", "bench"):
        assert command in help_text
    # the installed package runs from the venv, not from this checkout, and has the console
    located = run(
        env_python,
        "-c",
        "import collector, pathlib; p = pathlib.Path(collector.__file__).parent; "
        "print(p); print((p / 'static' / 'index.html').is_file()); "
        "print((p / 'static' / 'vendor' / 'uPlot.iife.min.js').is_file())",
        cwd=site,
    ).stdout.split()
    assert located[0].startswith(str(venv)), located
    assert located[1:] == ["True", "True"]  # the page and the libraries it loads
    # the collector in it works without the extension, on the Python path
    path = "import collector.lineproto as l; print(l.native_lineproto()); print(l.NATIVE)"
    assert run(env_python, "-c", path, cwd=site).stdout.startswith("False\nline protocol in pure")
    # and it validates the shipped agent config as on the site machine: the missing
    # credential is named, and with the credentials in place the config is fine
    # (its inventory, /etc/enoc/devices.yaml on a site, copied next to it here)
    config = tmp_path / "agent.yaml"
    inventory = tmp_path / "devices.yaml"
    inventory.write_text((REPO / "deploy" / "agent" / "devices.yaml").read_text())
    shipped = (REPO / "deploy" / "agent" / "agent.yaml").read_text()
    config.write_text(shipped.replace("/etc/enoc/devices.yaml", str(inventory)))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [enoc, "check-config", str(config)], cwd=site, capture_output=True, text=True, env=env
        )

    missing = check()
    assert missing.returncode == 1
    assert "mqtt.password_file: cannot read secret file" in missing.stderr
    assert "Traceback" not in missing.stderr
    for name in ("mqtt-password", "snmp-auth", "snmp-priv"):
        (credentials / name).write_text(f"{name}-0123456789")
    # the TLS files deploy/make-certs gives the agent: check-config loads them, as the agent
    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=["nyc-1"])
    cert, key = pki.clients["nyc-1"]
    for name, source in {"ca.pem": pki.ca_cert, "client.pem": cert, "client.key": key}.items():
        (credentials / name).write_bytes(source.read_bytes())
    fine = check()
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip().endswith("ok (agent)")


def test_a_plain_wheel_has_the_collectors_c_extensions(tmp_path: Path) -> None:
    """For a collector without containers: the same wheel with collector._lineproto and
    collector._metricsjson compiled in (for this Python and machine), used once
    installed."""
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k != "ENOC_PURE_PYTHON"}
    built = subprocess.run(
        [uv, "build", "--wheel", "-o", str(dist)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("enoc-*.whl")
    assert wheel.name.startswith("enoc-0.1.0-cp3"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("_lineproto", "_metricsjson"):
        assert [n for n in names if n.startswith(f"collector/{module}.") and n.endswith(".so")]
        assert f"collector/{module}.pyi" in names and f"collector/{module}.c" not in names
    venv = tmp_path / "venv"
    site = tmp_path / "site"
    site.mkdir()
    run(uv, "venv", "--quiet", str(venv), cwd=site)
    env_python = str(venv / "bin" / "python")
    # the extension needs nothing but the interpreter: no dependencies installed here
    run(uv, "pip", "install", "--python", env_python, "--no-deps", str(wheel), cwd=site)
    # the versions the Python side loads (an older build is refused, not used)
    expected = {
        "_lineproto": lineproto._NATIVE_VERSION,
        "_metricsjson": lineproto._METRICSJSON_VERSION,
    }
    for module, built_version in ((m, str(v)) for m, v in expected.items()):
        native = f"import collector.{module} as n; print(n.VERSION, n.__file__)"
        version, where = run(env_python, "-c", native, cwd=site).stdout.split()
        assert version == built_version and where.startswith(str(venv)), where
