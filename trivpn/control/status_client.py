"""The control socket's client side: `trivpn status` and `peer list` ask the running server.

Kept apart from the server side (trivpn.control.status_socket, which describes the protocol)
so that a command that only asks loads no trio and none of the data plane.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import socket

SOCKET_DIR: Final = Path("/run/trivpn")
DOCUMENT_VERSION: Final = 1
REQUEST_TIMEOUT: Final = 5.0  # seconds a client has to send its request and read the answer
MAX_ANSWER: Final = 64 << 20  # a client's bound on the document (tens of thousands of peers)
STATUS_REQUEST: Final = b"status\n"


class ControlUnavailable(Exception):
    """No running server answers on the control socket; the message says why."""


class NotRunning(ControlUnavailable):
    """There is no control socket: no server runs on that interface (or it is starting)."""


def socket_path(ifname: str, directory: Path | None = None) -> Path:
    return (SOCKET_DIR if directory is None else directory) / f"{ifname}.sock"


def query_status(path: Path, *, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Ask the server on ``path`` for its status document (blocking, bounded in time and size).

    Raises ControlUnavailable when nobody answers or the answer is not a status document.
    """
    try:  # no socket file, no server: said before loading socket (`peer list`, issue 13)
        os.lstat(path)
    except FileNotFoundError:
        raise _not_running(path) from None
    except OSError:
        pass  # connect(2) says what is wrong, as below
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
            sock.sendall(STATUS_REQUEST)
            data = _receive_all(sock)
        except FileNotFoundError:
            raise _not_running(path) from None
        except ConnectionRefusedError:
            raise ControlUnavailable(f"no server answers on {path} (stale socket)") from None
        except PermissionError:
            raise ControlUnavailable(f"{path}: permission denied (run as root)") from None
        except TimeoutError:
            raise ControlUnavailable(f"the server on {path} did not answer in time") from None
        except OSError as e:
            raise ControlUnavailable(f"{path}: {e.strerror or e}") from None
    import json  # here: `peer list` with no server running does not load it

    try:
        document = json.loads(data)
    except ValueError:
        raise ControlUnavailable(f"the server on {path} sent something other than JSON") from None
    if not isinstance(document, dict):
        raise ControlUnavailable(f"the server on {path} sent no status document")
    if "error" in document:
        raise ControlUnavailable(f"the server on {path} refused: {document['error']}")
    if document.get("version") != DOCUMENT_VERSION:
        raise ControlUnavailable(
            f"the server on {path} speaks status version {document.get('version')!r}, "
            f"this trivpn reads {DOCUMENT_VERSION}"
        )
    return document


def _not_running(path: Path) -> NotRunning:
    return NotRunning(f"no server is running ({path} does not exist)")


def _receive_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise OSError(f"the answer is over {MAX_ANSWER} bytes")
    return b"".join(chunks)
