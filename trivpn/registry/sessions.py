"""A peer's session as one gateway of a fleet last recorded it: where the peer sent from and
when its latest handshake was (trivpn.registry.fleet writes them, the PostgreSQL registry
keeps them, `peer list` shows the latest of the fleet)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Session:
    node: str  # the gateway ([state] node)
    public_key: bytes
    endpoint: str | None  # host:port (trivpn.proto.endpoints), None before the first packet
    latest_handshake: float | None  # epoch seconds, None before the first handshake


def latest_by_key(sessions: list[Session]) -> dict[bytes, Session]:
    """Each peer's session with the latest handshake on any gateway (one with a handshake
    before any without)."""
    latest: dict[bytes, Session] = {}
    for session in sessions:
        known = latest.get(session.public_key)
        if known is None or (session.latest_handshake or -1.0) > (known.latest_handshake or -1.0):
            latest[session.public_key] = session
    return latest


def fleet_later(session: Session | None, live: float | None) -> Session | None:
    """``session`` (a peer's latest stored one) when its handshake is later than this
    gateway's ``live`` one, else None: the live one wins when as late (the stored one lags
    by up to a second, trivpn.registry.fleet)."""
    latest = None if session is None else session.latest_handshake
    return session if latest is not None and (live is None or latest > live) else None


def live_node(session: Session | None, live: float | None, here: str) -> str | None:
    """Which gateway the peer's live session is on: the one with its latest handshake (this
    one, ``here``, unless `fleet_later`); None before any handshake."""
    later = fleet_later(session, live)
    if later is not None:
        return later.node
    return None if live is None else here
