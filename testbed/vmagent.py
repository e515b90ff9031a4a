"""Metrics on two VictoriaMetrics nodes behind one vmagent, on ephemeral loopback ports.

    collector --remote write--> vmagent --> VictoriaMetrics "a"
                                       \\--> VictoriaMetrics "b"

`MetricsPair(workdir, mode)` starts both nodes, then Debian's vmagent (1.79) in one of
two modes:

- `replicate`: every sample to both nodes (vmagent's behaviour with several
  `-remoteWrite.url`);
- `shard`: each series to exactly one node, chosen by a hash of its `device` label
  (vmagent 1.79 has no `-remoteWrite.shardByURL`, added in 1.86: each URL gets its own
  `-remoteWrite.urlRelabelConfig` that keeps its share, as Prometheus' `hashmod` does).

Each node has its own queue under `-remoteWrite.tmpDataPath`: a node that is down gets
what it missed once it is back, and vmagent keeps accepting writes meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Literal, Self

from testbed.servers import Server, ServerError, VictoriaMetrics, _http_get

VMAGENT = "/usr/bin/vmagent"
Mode = Literal["replicate", "shard"]
SHARD_LABELS = ("device",)  # a device's series stay together on one node


def shard_relabel(index: int, count: int, labels: tuple[str, ...] = SHARD_LABELS) -> str:
    """The relabelling (YAML) that keeps the `index`-th of `count` shards of the series."""
    sources = ", ".join(labels)
    return (
        f"- action: hashmod\n  source_labels: [{sources}]\n  modulus: {count}\n"
        "  target_label: __shard\n"
        f"- action: keep\n  source_labels: [__shard]\n  regex: '{index}'\n"
        "- action: labeldrop\n  regex: __shard\n"
    )


class VmAgent(Server):
    """Debian's vmagent, taking remote writes on `write_url` and sending to `targets`
    (each a VictoriaMetrics base URL); `mode` as the module says."""

    name = "vmagent"

    def __init__(self, workdir: Path, targets: list[str], mode: Mode = "replicate") -> None:
        super().__init__(workdir)
        if mode not in ("replicate", "shard"):
            raise ValueError(f'mode must be "replicate" or "shard", got "{mode}"')
        self.targets = targets
        self.mode = mode

    def command(self) -> list[str]:
        urls = [f"-remoteWrite.url={t}/api/v1/write" for t in self.targets]
        relabel: list[str] = []
        if self.mode == "shard":
            for index in range(len(self.targets)):
                path = self.workdir / f"shard-{index}.yaml"
                path.write_text(shard_relabel(index, len(self.targets)))
                relabel.append(f"-remoteWrite.urlRelabelConfig={path}")
        return [
            VMAGENT,
            f"-httpListenAddr={self.host}:{self.port}",
            *urls,
            *relabel,
            f"-remoteWrite.tmpDataPath={self.workdir}/queue",
            # a test's few hundred points go out at once, not after the default second
            "-remoteWrite.flushInterval=200ms",
            "-loggerOutput=stdout",
        ]

    def _get(self, path: str) -> tuple[int, bytes]:
        return _http_get(f"http://{self.host}:{self.port}{path}", timeout=5)

    def ready(self) -> bool:
        return self._get("/health")[0] == 200

    @property
    def write_url(self) -> str:
        """Where the collector's remote_write sink points."""
        return f"http://{self.host}:{self.port}/api/v1/write"

    def metric(self, name: str) -> dict[str, float]:
        """vmagent's own counter or gauge `name` from /metrics, by its label set."""
        status, body = self._get("/metrics")
        if status != 200:
            raise ServerError(f"vmagent /metrics answered {status}")
        found: dict[str, float] = {}
        pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
        for match in pattern.finditer(body.decode()):
            found[match.group(1) or ""] = float(match.group(2))
        return found

    def by_target(self, name: str) -> list[float]:
        """vmagent's `name` per target, in the order of `targets` (its `url="N:..."` label,
        N from 1); 0 for a target it has not counted yet."""
        values = [0.0] * len(self.targets)
        for labels, value in self.metric(name).items():
            found = re.search(r'url="(\d+):', labels)
            if found:
                values[int(found.group(1)) - 1] += value
        return values

    def queued_on_disk(self) -> list[int]:
        """Bytes each target's file queue holds (its metainfo.json's writer offset less its
        reader offset), in the order of `targets`: read while vmagent is stopped, when it
        has put every unsent block there."""
        queued = [0] * len(self.targets)
        for meta in (self.workdir / "queue" / "persistent-queue").glob("*_*/metainfo.json"):
            index = int(meta.parent.name.split("_", 1)[0]) - 1
            info = json.loads(meta.read_text())
            queued[index] += int(info["WriterOffset"]) - int(info["ReaderOffset"])
        return queued

    def pending_bytes(self) -> float:
        """What vmagent's queues hold in files, not yet accepted by a node (the blocks its
        workers are retrying are not counted: see `by_target("..._errors_total")`)."""
        return sum(self.metric("vmagent_remotewrite_pending_data_bytes").values())


class MetricsPair:
    """Two VictoriaMetrics nodes ("a", "b") and one vmagent in front; stopped all together
    on exit, even after a failure half-way through starting."""

    def __init__(self, workdir: Path, mode: Mode = "replicate") -> None:
        self.nodes = {n: VictoriaMetrics(workdir / f"vm-{n}") for n in ("a", "b")}
        self.mode = mode
        self.agent: VmAgent | None = None
        self.workdir = workdir

    def start(self) -> Self:
        try:
            for node in self.nodes.values():
                node.start()
            targets = [node.url for node in self.nodes.values()]
            self.agent = VmAgent(self.workdir / "vmagent", targets, self.mode).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """vmagent first, so it does not log a node going away; safe twice."""
        servers: list[Server] = [*([self.agent] if self.agent else []), *self.nodes.values()]
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()

    @property
    def write_url(self) -> str:
        assert self.agent is not None, "start() first"
        return self.agent.write_url

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
