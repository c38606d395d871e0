"""IP forwarding through /proc/sys: switch on, remember what was there, put it back.

/proc/sys/net shows the network namespace of the process that opens it, so these act on
the caller's namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

IPV4_FORWARDING = "/proc/sys/net/ipv4/ip_forward"
IPV6_FORWARDING = "/proc/sys/net/ipv6/conf/all/forwarding"

log = logging.getLogger(__name__)


class SysctlError(Exception):
    """A forwarding sysctl could not be read or written."""


def _read(path: str) -> str:
    with open(path) as file:
        return file.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


def enable_forwarding(*, ipv4: bool, ipv6: bool) -> dict[str, str]:
    """Turn forwarding on; returns {path: previous value} for the ones it changed.

    A sysctl that was already on is left out, so ``restore`` never turns off what someone
    else turned on. On failure the ones already changed are put back before SysctlError.
    """
    wanted = [path for path, on in ((IPV4_FORWARDING, ipv4), (IPV6_FORWARDING, ipv6)) if on]
    saved: dict[str, str] = {}
    for path in wanted:
        try:
            previous = _read(path)
            if previous != "1":
                _write(path, "1")
                saved[path] = previous
        except OSError as exc:
            restore(saved)
            raise SysctlError(f"cannot enable forwarding in {path}: {exc.strerror}") from exc
    return saved


def restore(saved: Mapping[str, str]) -> None:
    """Write the saved values back; a failure is logged and the rest still restored."""
    for path, value in saved.items():
        try:
            _write(path, value)
        except OSError as exc:
            log.warning("could not restore %s to %r: %s", path, value, exc.strerror)
