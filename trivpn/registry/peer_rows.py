"""A peer as one row of plain JSON values: `trivpn peer list --json` and the web API both
answer these (their field names are the API's).

A row has the peer's identity (name, source, addresses, public_key, created), its policy and
usage as stored (ROW_FIELDS, at a given wall clock) and the live fields (endpoint,
latest_handshake, received, sent), None until the running server's entry of the peer (its
status document's shape, trivpn.control.status_socket) is merged in; that entry's policy and
usage fields then win, being what the server enforces now. In a fleet (a [state] database)
`merge_fleet` adds ``node`` and makes the handshake the fleet's latest (trivpn.registry.fleet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from trivpn.config import WireGuardPeerConfig
from trivpn.proto.policy import PeerState, Policy, policy_json, state
from trivpn.proto.usage import NO_USAGE, UsageRecord, counted_bytes, usage_json
from trivpn.proto.wireguard import keys
from trivpn.registry.sessions import Session, fleet_later, live_node
from trivpn.registry.store import RegistryPeer

# the policy and usage fields of a row, as policy_json and usage_json name them
ROW_FIELDS: Final = (
    "state",
    "enabled",
    "expires",
    "quota_bytes",
    "quota_period",
    "usage_bytes",
    "lifetime_rx_bytes",
    "lifetime_tx_bytes",
    "rate_down_bps",
    "rate_up_bps",
)
LIVE_FIELDS: Final = ("endpoint", "latest_handshake", "received", "sent")
FLEET_FIELDS: Final = ("node",)  # rows of a fleet's gateway only


def state_of(policy: Policy, record: UsageRecord, wallclock: float) -> PeerState:
    """The state a stored policy and usage make at ``wallclock``."""
    return state(policy, wallclock, counted_bytes(record, policy, wallclock))


def policy_fields(policy: Policy, record: UsageRecord, wallclock: float) -> dict[str, Any]:
    """A row's ROW_FIELDS as the registry and the config file make them at ``wallclock``."""
    return {
        **policy_json(state_of(policy, record, wallclock), policy),
        **usage_json(record, policy, wallclock),
    }


def static_row(
    peer: WireGuardPeerConfig, usage: Mapping[bytes, UsageRecord], wallclock: float
) -> dict[str, Any]:
    """A peer of the config file."""
    return {
        "name": peer.name,
        "source": "config",
        "addresses": [str(n) for n in peer.allowed_ips],
        "public_key": keys.encode_key(peer.public_key),
        "created": None,
        **policy_fields(peer.policy, usage.get(peer.public_key, NO_USAGE), wallclock),
        **dict.fromkeys(LIVE_FIELDS),
    }


def registry_row(
    peer: RegistryPeer, usage: Mapping[bytes, UsageRecord], wallclock: float
) -> dict[str, Any]:
    return {
        "name": peer.name,
        "source": "registry",
        "addresses": [str(a) for a in peer.addresses] + [str(n) for n in peer.routes],
        "public_key": keys.encode_key(peer.public_key),
        "created": peer.created_at.isoformat(),
        **policy_fields(peer.policy, usage.get(peer.public_key, NO_USAGE), wallclock),
        **dict.fromkeys(LIVE_FIELDS),
    }


def peer_rows(
    static: Iterable[WireGuardPeerConfig],
    registry: Iterable[RegistryPeer],
    usage: Mapping[bytes, UsageRecord],
    wallclock: float,
) -> list[dict[str, Any]]:
    """Every peer, static (config file) ones first; live fields None."""
    rows = [static_row(p, usage, wallclock) for p in static]
    return rows + [registry_row(p, usage, wallclock) for p in registry]


def merge_live(row: dict[str, Any], entry: Mapping[str, Any]) -> None:
    """Put the running server's entry of the peer into its row (a server of before the
    policy fields has only some of ROW_FIELDS)."""
    row.update(
        endpoint=entry["endpoint"],
        latest_handshake=entry["latest_handshake"],
        received=entry["rx_bytes"],
        sent=entry["tx_bytes"],
        **{key: entry[key] for key in ROW_FIELDS if key in entry},
    )


def merge_fleet(row: dict[str, Any], session: Session | None, here: str) -> None:
    """The fleet's view of the peer, after `merge_live`: its latest handshake on any gateway,
    with that session's endpoint, and which gateway (``node``) it was on. ``session`` is the
    peer's latest stored one (sessions.latest_by_key); this gateway's (``here``) live entry
    wins when it is as late (the stored one lags by up to a second). Transfer stays this
    gateway's; usage is the fleet's sum already."""
    live = row["latest_handshake"]
    row["node"] = live_node(session, live, here)
    later = fleet_later(session, live)
    if later is not None:
        row.update(latest_handshake=later.latest_handshake, endpoint=later.endpoint)
