"""pytest fixtures for a real sshd on loopback.

They are enabled for every test module by tests/conftest.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from antelope_ha.ssh import SSHRunner
from tests.sshd import SshdHandle, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHandle]:
    """One sshd shared by a module: do not kill or pause it (use ``sshd_factory``)."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as handle:
        yield handle


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[Callable[..., SshdHandle]]:
    """Starts private sshd's (``start_sshd`` keyword arguments); all stopped at teardown."""
    handles: list[SshdHandle] = []

    def start(**kwargs: object) -> SshdHandle:
        handle = start_sshd(tmp_path / f"sshd{len(handles)}", **kwargs)  # type: ignore[arg-type]
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def ssh_runner(sshd: SshdHandle) -> Iterator[SSHRunner]:
    """A runner logged in to the module's sshd, closed at teardown."""
    with SSHRunner(**sshd.runner_kwargs(), connect_timeout_s=5, command_timeout_s=20) as runner:
        yield runner
