"""A local runner for one simulated site that fails like a remote host does."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from antelope_ha.runner import CommandResult, HostUnreachable, LocalRunner
from simsite.layout import ORCHESTRATOR
from simsite.net import Network, Unreachable


@dataclass
class SimRunner(LocalRunner):
    """Runs commands in the site's directory and environment; raises
    ``HostUnreachable`` while the site is powered off or the link from the
    orchestrator to it is cut."""

    net: Network = field(kw_only=True)
    site: str = field(kw_only=True)

    def _reach(self) -> None:
        try:
            self.net.check(ORCHESTRATOR, self.site)
        except Unreachable as exc:
            raise HostUnreachable(f"{self.host} ({self.site}) is unreachable: {exc}") from None

    def run(
        self, argv: Sequence[str], *, timeout_s: float | None = None, stdin: str | None = None
    ) -> CommandResult:
        self._reach()
        return super().run(argv, timeout_s=timeout_s, stdin=stdin)

    def read_file(self, path: str) -> bytes:
        self._reach()
        return super().read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self._reach()
        super().write_file(path, data)

    def exists(self, path: str) -> bool:
        self._reach()
        return super().exists(path)
