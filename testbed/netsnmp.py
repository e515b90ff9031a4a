"""net-snmp's snmptrapd and snmpd on ephemeral loopback ports, for tests and benchmarks.

snmptrapd records every trap it receives as one parseable line; snmpd answers v2c and
the SNMPv3 users it is given. Both run on `testbed.servers.Server`'s lifecycle.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.servers import Server

SNMPTRAPD = "/usr/sbin/snmptrapd"
SNMPD = "/usr/sbin/snmpd"
SNMPTRAP = "/usr/bin/snmptrap"
SNMPGET = "/usr/bin/snmpget"
PROBE_TRAP = "1.3.6.1.4.1.8072.9999.9999.1"  # net-snmp's experimental arc: never a real trap


def _snmp_env(state_dir: Path) -> dict[str, str]:
    """net-snmp without system MIBs or config, keeping its state in our directory."""
    return {
        **os.environ,
        "MIBS": "",
        "SNMPCONFPATH": str(state_dir),
        "SNMP_PERSISTENT_DIR": str(state_dir),
    }


def _daemon(server: Server, binary: str, conf: Path, *options: str) -> list[str]:
    """A net-snmp daemon in the foreground, reading only `conf`, logging to the server's
    log, its pid file in the work directory, listening on the server's UDP port."""
    return [
        binary,
        "-f",
        *options,
        "-C",
        "-c",
        str(conf),
        "-Lf",
        str(server.log_path),
        "-p",
        str(server.workdir / f"{Path(binary).name}.pid"),
        f"udp:{server.host}:{server.port}",
    ]


@dataclass(frozen=True)
class TrapUser:
    """An SNMPv3 user snmptrapd accepts traps from, for one sending engine."""

    name: str
    engine_id: str  # hex, the sender's (the device's) engine ID
    auth_protocol: str = "SHA-256"
    auth_key: str = ""
    priv_protocol: str = "AES"
    priv_key: str = ""


@dataclass(frozen=True)
class SnmpUser:
    """An SNMPv3 user snmpd answers, in net-snmp's protocol names ("none" for no auth or
    no privacy)."""

    name: str
    auth_protocol: str = "SHA-256"  # MD5 SHA SHA-224 SHA-256 SHA-384 SHA-512
    auth_key: str = ""
    priv_protocol: str = "AES"  # DES AES AES-192 AES-256
    priv_key: str = ""


@dataclass
class Trap:
    source: str  # the sender's address
    trap_oid: str
    varbinds: dict[str, str] = field(default_factory=dict)


class SnmpTrapd(Server):
    """net-snmp's snmptrapd writing one parseable line per trap (v1, v2c, v3, informs)."""

    name = "snmptrapd"
    protocol = "udp"

    def __init__(
        self, workdir: Path, *, community: str = "public", v3_users: Sequence[TrapUser] = ()
    ) -> None:
        super().__init__(workdir)
        self.community = community
        self.v3_users = list(v3_users)

    def env(self) -> dict[str, str]:
        return _snmp_env(self.workdir)

    def command(self) -> list[str]:
        users = [
            f"createUser -e 0x{u.engine_id} {u.name} "
            f"{u.auth_protocol} {u.auth_key} {u.priv_protocol} {u.priv_key}"
            for u in self.v3_users
        ]
        conf = self.workdir / "snmptrapd.conf"
        conf.write_text(
            "\n".join(
                [
                    "disableAuthorization yes",
                    "doNotLogTraps no",
                    "format2 TRAP\\t%b\\t%V~%v\\n",
                    "format1 TRAP\\t%b\\t%V~%v\\n",
                    *users,
                ]
            )
            + "\n"
        )
        return _daemon(self, SNMPTRAPD, conf, "-n", "-On")

    def ready(self) -> bool:
        subprocess.run(
            [
                SNMPTRAP,
                "-v",
                "2c",
                "-c",
                self.community,
                f"{self.host}:{self.port}",
                "",
                PROBE_TRAP,
            ],
            env=_snmp_env(self.workdir),
            capture_output=True,
            timeout=5,
            check=False,
        )
        return any(line.startswith("TRAP") for line in self._lines())

    def _lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def traps(self) -> list[Trap]:
        out: list[Trap] = []
        for line in self._lines():
            if not line.startswith("TRAP\t"):
                continue
            _, source, varbind_text = line.split("\t", 2)
            varbinds: dict[str, str] = {}
            for item in varbind_text.split("~"):
                oid, sep, value = item.partition(" = ")
                if sep:
                    varbinds[oid.strip().lstrip(".")] = value.strip()
            trap_oid = varbinds.get("1.3.6.1.6.3.1.1.4.1.0", "").removeprefix("OID: ").lstrip(".")
            if trap_oid == PROBE_TRAP:
                continue
            address = source.split("[", 1)[1].split("]", 1)[0] if "[" in source else source
            out.append(Trap(address, trap_oid, varbinds))
        return out

    def wait_for(
        self, predicate: Callable[[list[Trap]], bool], timeout: float = 10.0
    ) -> list[Trap]:
        deadline = time.monotonic() + timeout
        while True:
            traps = self.traps()
            if predicate(traps):
                return traps
            if time.monotonic() > deadline:
                raise AssertionError(f"snmptrapd did not see the expected traps; it saw {traps}")
            time.sleep(0.05)


class SnmpD(Server):
    """net-snmp's snmpd answering v2c on loopback: a peer for benchmarks and tests."""

    name = "snmpd"
    protocol = "udp"

    def __init__(
        self,
        workdir: Path,
        *,
        community: str = "public",
        users: Sequence[SnmpUser] = (),
    ) -> None:
        super().__init__(workdir)
        self.community = community
        self.users = list(users)  # SNMPv3 users it answers (read-only, at their level)

    def env(self) -> dict[str, str]:
        return _snmp_env(self.workdir)

    def command(self) -> list[str]:
        conf = self.workdir / "snmpd.conf"
        lines = [f"rocommunity {self.community} {self.host}"]
        for user in self.users:
            create = f"createUser {user.name}"
            level = "noauth"
            if user.auth_protocol != "none":
                create += f" {user.auth_protocol} {user.auth_key}"
                level = "auth"
                if user.priv_protocol != "none":
                    create += f" {user.priv_protocol} {user.priv_key}"
                    level = "priv"
            lines += [create, f"rouser {user.name} {level}"]
        conf.write_text("\n".join(lines) + "\n")
        return _daemon(self, SNMPD, conf)

    def ready(self) -> bool:
        result = subprocess.run(
            [
                SNMPGET,
                "-v2c",
                "-c",
                self.community,
                "-t",
                "0.5",
                "-r",
                "0",
                f"{self.host}:{self.port}",
                "1.3.6.1.2.1.1.1.0",
            ],
            env=_snmp_env(self.workdir),
            capture_output=True,
            timeout=5,
            check=False,
        )
        return result.returncode == 0
