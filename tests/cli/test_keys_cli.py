"""`trivpn genkey | pubkey | genpsk` agree with wireguard-tools' `wg` on the key text format."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(shutil.which("wg") is None, reason="wg (wireguard-tools) missing")


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def trivpn(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "trivpn", *args], stdin)


def wg(*args: str, stdin: str | None = None) -> str:
    done = run(["wg", *args], stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_trivpn_pubkey_agrees_with_wg_pubkey() -> None:
    for _ in range(5):
        private = wg("genkey")
        ours = trivpn("pubkey", stdin=private)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == wg("pubkey", stdin=private)  # same text, same trailing newline


def test_wg_pubkey_accepts_trivpn_genkey() -> None:
    keys = set()
    for _ in range(5):
        made = trivpn("genkey")
        assert made.returncode == 0, made.stderr
        private = made.stdout
        assert private.endswith("\n") and len(private) == 45
        raw = base64.b64decode(private.strip(), validate=True)
        assert raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40  # clamped, as `wg genkey` does
        public = wg("pubkey", stdin=private)
        assert trivpn("pubkey", stdin=private).stdout == public
        keys.add(private)
    assert len(keys) == 5


def test_genpsk_is_32_random_bytes_in_wg_text() -> None:
    psks = [trivpn("genpsk") for _ in range(3)]
    assert all(p.returncode == 0 for p in psks), [p.stderr for p in psks]
    assert len({p.stdout for p in psks}) == 3
    for psk in psks:
        assert len(base64.b64decode(psk.stdout.strip(), validate=True)) == 32
        assert len(wg("pubkey", stdin=psk.stdout).strip()) == 44  # wg takes it as a key too


def test_pubkey_of_bad_input_is_one_line_without_echoing_it() -> None:
    bad = "not-a-key-but-maybe-a-secret"
    done = trivpn("pubkey", stdin=bad + "\n")
    assert done.returncode != 0
    assert done.stdout == ""
    err = done.stderr.strip()
    assert err and "\n" not in err and "Traceback" not in err
    assert bad not in err
    assert run(["wg", "pubkey"], bad + "\n").returncode != 0  # wg refuses it too
