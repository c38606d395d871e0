import logging
import stat
import subprocess
from pathlib import Path

import pytest

from trivpn.daemon.keyfile import KeyFileError, load_or_create_private_key
from trivpn.proto.wireguard import keys


def test_created_with_mode_0600_in_a_0700_directory_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "server.key"
    with caplog.at_level(logging.INFO):
        key = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text().strip()
    assert keys.parse_key(text) == key
    assert load_or_create_private_key(path) == key  # the second start reuses it
    # only the public key reaches the log
    assert text not in caplog.text
    assert keys.pubkey(text) in caplog.text
    # the stock tool reads the same file
    wg = subprocess.run(["wg", "pubkey"], input=text, capture_output=True, text=True)
    assert wg.stdout.strip() == keys.pubkey(text)


def test_a_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"wireguard.private_key_file: .*server.key"):
        load_or_create_private_key(path)


def test_a_world_readable_key_file_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "server.key"
    path.write_text(keys.genkey() + "\n")
    path.chmod(0o644)
    load_or_create_private_key(path)
    assert "readable by others (mode 644)" in caplog.text
