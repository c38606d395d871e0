"""QR codes of text the CLI prints on a terminal: a client config (`peer add --qr`), a TOTP
secret's URI (`web totp enable`). The code itself: trivpn.registry.clientconf.qr_code."""

from __future__ import annotations

import io


def terminal_qr(text: str, *, colored: bool) -> str:
    """Half-block characters, two modules a line; the blocks are the light modules, so on a
    terminal the code is drawn white on black whatever the terminal's own colours."""
    from trivpn.registry.clientconf import qr_code  # the registry: not for `trivpn genkey`

    terminal = io.StringIO()
    qr_code(text).terminal(out=terminal, compact=True)
    if not colored:
        return terminal.getvalue()
    white_on_black, reset = "\x1b[97;40m", "\x1b[0m"
    return "".join(f"{white_on_black}{line}{reset}\n" for line in terminal.getvalue().splitlines())
