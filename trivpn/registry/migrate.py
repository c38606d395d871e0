"""`trivpn registry migrate`: a gateway's SQLite registry copied into PostgreSQL, where a fleet
of gateways can share it. One read transaction on each side of the copy, one write
transaction into the database, which must hold no registry yet (pg_store.RegistryNotEmpty):
either every peer, address, route, policy and usage record arrives or nothing does."""

from __future__ import annotations

import attrs

from trivpn.registry.pg_store import PgRegistry
from trivpn.registry.store import Registry


@attrs.frozen
class Copied:
    peers: int
    addresses: int
    routes: int
    usage: int  # records, registry and static peers' alike


def copy_registry(source: Registry, target: PgRegistry, wallclock: float) -> Copied:
    """Copy everything in ``source`` into the empty ``target``; ``wallclock`` (time.time())
    stamps the usage records' last update."""
    peers = source.snapshot().peers
    usage = source.usage_records(None)
    target.import_registry(peers, usage, wallclock)
    return Copied(
        peers=len(peers),
        addresses=sum(len(p.addresses) for p in peers),
        routes=sum(len(p.routes) for p in peers),
        usage=len(usage),
    )
