"""Invalid configuration is refused with a message naming the field."""
import pytest
from pydantic import ValidationError

from antelope_ha.config import PairConfig, SiteConfig, UnknownSite

SITE = dict(name="ms", host="ms.example.org", transport="local", rtexec_dir="/rt", idserver_address="ms:2498")


def error_of(**changes) -> str:
    with pytest.raises(ValidationError) as exc:
        SiteConfig(**{**SITE, **changes})
    return str(exc.value)


@pytest.mark.parametrize("field, value, words", [
    ("idserver_address", "ms.example.org", "host:port"),
    ("idserver_address", "ms:99999", "1..65535"),
    ("name", "Main Site", "site name must match"),
    ("writer_tasks", ["orb2dbt; rm -rf /"], "rtexec task name"),
    ("max_orb_latency_s", -1, "greater than 0"),
    ("transport", "telnet", "'ssh' or 'local'"),
])
def test_bad_site_values_are_named(field, value, words):
    text = error_of(**{field: value})
    assert field in text and words in text


def test_ssh_transport_needs_ssh_settings():
    assert "no ssh settings" in error_of(transport="ssh")


def test_ssh_key_is_secret_in_repr():
    s = SiteConfig(**{**SITE, "transport": "ssh",
                      "ssh": {"username": "rt", "known_hosts": "/k", "private_key": "-----BEGIN KEY-----X"}})
    assert "BEGIN KEY" not in repr(s) and "BEGIN KEY" not in s.model_dump_json()


def test_unknown_setting_is_refused():
    assert "dbidserverr" in error_of(dbidserverr="x")


def test_pair_needs_two_sites_and_names_unknown_ones():
    with pytest.raises(ValidationError, match="main.name and backup.name are both"):
        PairConfig(main=SITE, backup=SITE, witness={"host": "w"})
    pair = PairConfig(main=SITE, backup={**SITE, "name": "bus"}, witness={"host": "w"})
    assert pair.site("bus").name == "bus"
    with pytest.raises(UnknownSite, match="unknown site 'msx': this pair has ms, bus"):
        pair.site("msx")
