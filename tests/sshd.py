"""The simulated site's real sshd, for tests: see ``simsite.sshd``."""
from simsite.sshd import SshdHandle, start_sshd, stop_all

__all__ = ["SshdHandle", "start_sshd", "stop_all"]
