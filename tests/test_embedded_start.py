"""Embedded Prefect starts from a fresh clone: no PREFECT_HOME yet, no server.

Two cold starts of embedded Prefect in new homes whose very directories do
not exist yet (Prefect alone then fails to create its database and times out
retrying), each creating and migrating its database, the slow start: one
through the `antelope-ha` command with none of the Makefile's settings
(antelope-ha sets its own start-up limit and creates the home), then one
whole `make drill`, with them. A start past its limit is a clear message, not
a traceback."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
ANTELOPE_HA = PROJECT / ".venv" / "bin" / "antelope-ha"

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """A shell's environment: none of the test session's Prefect settings (its server, its home)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


def drill_settings() -> dict[str, str]:
    """The variables `make drill` sets for embedded Prefect, read from the Makefile."""
    recipe = (PROJECT / "Makefile").read_text().split("\ndrill:", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"\b(PREFECT_[A-Z_]+)=(\S+)", recipe))


def cold_start(home: Path, settings: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """`antelope-ha --embedded status` for a pair that does not exist: it must reach the API
    (embedded Prefect, started in ``home``) to find that out."""
    assert not home.exists()
    start = time.monotonic()
    result = subprocess.run([str(ANTELOPE_HA), "--embedded", "status", "--pair", "no-such-pair"], cwd=PROJECT,
                            text=True,
                            capture_output=True, env={**clean_env(), **settings}, stdin=subprocess.DEVNULL,
                            timeout=300)
    return result, time.monotonic() - start


def test_embedded_prefect_starts_cold_from_a_fresh_clone(tmp_path: Path) -> None:
    home = tmp_path / "home" / "prefect"
    result, took = cold_start(home, {"PREFECT_HOME": str(home)})
    assert result.returncode == 3 and "no Antelope Pair block named 'no-such-pair'" in result.stdout, \
        result.stdout + result.stderr[-3000:]
    assert (home / "prefect.db").exists()
    times = [took]

    # the whole drill below runs with the Makefile's own home and start-up limit
    found = drill_settings()
    assert {"PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"} <= set(found), found
    drill_home = tmp_path / "drill" / "prefect"
    start = time.monotonic()
    drill = subprocess.run(["make", "-C", str(PROJECT), "drill", f"DRILL_HOME={drill_home}"], text=True,
                           capture_output=True, env=clean_env(), stdin=subprocess.DEVNULL, timeout=900)
    times.append(time.monotonic() - start)
    assert drill.returncode == 0 and "PASSED" in drill.stdout, drill.stdout[-3000:] + drill.stderr[-3000:]
    assert (drill_home / "prefect.db").exists()
    print("cold starts (a command, then a whole drill), wall s:", ", ".join(f"{t:.1f}" for t in times))


def test_a_start_past_its_limit_says_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home" / "prefect"
    result, _ = cold_start(home, {"PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"})
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    text = " ".join(result.stdout.split())
    assert "embedded Prefect did not answer within 1 s" in text
    assert "Run the command again, or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in text
    assert "Traceback" not in result.stdout + result.stderr


def test_without_prefect_api_url_a_command_is_refused_saying_how_to_set_it(tmp_path: Path) -> None:
    home = tmp_path / "home" / "prefect"
    result = subprocess.run([str(ANTELOPE_HA), "status", "--pair", "no-such-pair"], cwd=PROJECT, text=True,
                            capture_output=True, env={**clean_env(), "PREFECT_HOME": str(home)},
                            stdin=subprocess.DEVNULL, timeout=120)
    text = " ".join(result.stdout.split())
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "PREFECT_API_URL is not set" in text and "export PREFECT_API_URL=" in text and "--embedded" in text
    assert not (home / "prefect.db").exists()  # no embedded Prefect was started
