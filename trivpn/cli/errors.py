"""How a command fails: one line on stderr and an exit code, never a traceback.

2 is a bad config or usage (the user can fix the input), 1 is the system refusing; 141 is
stdout's reader gone (a closed pipe), what a shell reports for wg(8) killed by SIGPIPE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
# SIGPIPE is 13 on Linux (signal(7)); not read from the signal module, whose enums take
# about 2 ms to build at every start (issue 13)
EXIT_BROKEN_PIPE: Final = 128 + 13


class CliError(Exception):
    """A failure explained in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _expected_errors() -> tuple[type[BaseException], ...]:
    # imported here: `check`, `genkey` and the like must not load the server's modules
    from trivpn.control.metrics import MetricsError
    from trivpn.control.web.serve import WebServeError
    from trivpn.daemon.errors import ServerError
    from trivpn.daemon.keyfile import KeyFileError
    from trivpn.net.link import LinkError
    from trivpn.net.nft import NftError
    from trivpn.net.tun import TunError

    return (
        *(ServerError, TunError, NftError, LinkError, KeyFileError),
        *(MetricsError, WebServeError, OSError),
    )


def _unwrap(exc: BaseException) -> BaseException:
    """The single leaf of nested exception groups (trio wraps task errors), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run_reporting(fn: Callable[[], Awaitable[object]]) -> None:
    """trio.run(fn), turning the system's refusals into one-line CliErrors."""
    import trio  # here: `genkey`, `peer list` and the like must not load it

    try:
        trio.run(fn)
    except BaseException as e:
        leaf = _unwrap(e)
        if isinstance(leaf, _expected_errors()):
            raise CliError(str(leaf)) from e
        if isinstance(leaf, KeyboardInterrupt):
            return
        raise
