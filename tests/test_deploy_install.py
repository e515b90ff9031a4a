"""The self-contained install of deploy/README.md: a wheel plus the hash-locked requirements
from uv.lock, into a fresh virtual environment, gives a working `enoc` with the console's
files, outside this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploykit import REPO

pytestmark = pytest.mark.servers


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_and_locked_requirements_install_and_run(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    dist = tmp_path / "dist"
    run(uv, "build", "--wheel", "-o", str(dist), cwd=REPO)
    (wheel,) = dist.glob("enoc-*.whl")
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
        "print(p); print((p / 'static' / 'index.html').is_file())",
        cwd=site,
    ).stdout.split()
    assert located[0].startswith(str(venv)), located
    assert located[1] == "True"
    # and it validates the shipped agent config as on the site machine: the missing
    # credential is named, and with the credentials in place the config is fine
    config = REPO / "deploy" / "agent" / "agent.yaml"
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
    fine = check()
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout.strip().endswith("ok (agent)")
