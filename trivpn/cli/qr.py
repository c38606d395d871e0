"""QR codes of text the CLI prints: a client config (`peer add --qr`), a TOTP secret's URI
(`web totp enable`)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import segno


def qr_code(text: str) -> segno.QRCode:
    import segno  # here: the commands that print no QR code must not load it

    # a full QR code, never a Micro QR, which the WireGuard apps' scanners do not read
    return segno.make_qr(text, error="l")


def terminal_qr(text: str, *, colored: bool) -> str:
    """Half-block characters, two modules a line; the blocks are the light modules, so on a
    terminal the code is drawn white on black whatever the terminal's own colours."""
    terminal = io.StringIO()
    qr_code(text).terminal(out=terminal, compact=True)
    if not colored:
        return terminal.getvalue()
    white_on_black, reset = "\x1b[97;40m", "\x1b[0m"
    return "".join(f"{white_on_black}{line}{reset}\n" for line in terminal.getvalue().splitlines())
