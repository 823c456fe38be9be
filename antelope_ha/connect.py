"""Build the runner for a site from its configuration."""
from __future__ import annotations

from antelope_ha.config import SiteConfig
from antelope_ha.runner import LocalRunner, Runner

SYSTEM_PATH = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]


def site_environment(site: SiteConfig) -> dict[str, str]:
    """ANTELOPE and a PATH with the site's directories, then $ANTELOPE/bin."""
    path = [*site.path_prepend, f"{site.antelope}/bin", *SYSTEM_PATH]
    return {"ANTELOPE": site.antelope, "PATH": ":".join(path)}


def make_runner(site: SiteConfig) -> Runner:
    env = site_environment(site)
    if site.transport == "local":
        return LocalRunner(host=site.host, cwd=site.rtexec_dir, env=env)
    from antelope_ha.ssh import SSHRunner

    assert site.ssh is not None  # SiteConfig validates this
    s = site.ssh
    return SSHRunner(
        host=site.host,
        port=s.port,
        username=s.username,
        known_hosts=s.known_hosts,
        key_filename=s.key_filename,
        private_key=s.private_key.get_secret_value() if s.private_key else None,
        passphrase=s.passphrase.get_secret_value() if s.passphrase else None,
        allow_agent=s.allow_agent,
        connect_timeout_s=s.connect_timeout_s,
        command_timeout_s=s.command_timeout_s,
        env=env,
        cwd=site.rtexec_dir,
    )
