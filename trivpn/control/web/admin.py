"""What the web admin does to peers and reads of the running server, apart from HTTP: the API
(trivpn.control.web.api) calls `Admin` and turns an `AdminError` into its status and message.

A peer's fields are checked as `trivpn peer add | set` checks them (trivpn.proto.peer_fields),
its rows are `peer list --json`'s (trivpn.registry.peer_rows) plus ``online``,
``rx_rate_bps`` and ``tx_rate_bps``, and it is added as `peer add` adds it
(trivpn.registry.peer_add). The registry is opened for each call in a worker thread, as the
CLI opens it (its own SQLite connection: PeerSync takes the commit for a foreign one), never
on the trio thread; after a write PeerSync is poked, so the server applies it at once. Live
fields come from the server's own peers, read in slices so that 10,000 peers never hold the
loop.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from trivpn.config import WireGuardPeerConfig
from trivpn.control.status_socket import StatusSource, document_shell, in_slices, peer_entry
from trivpn.control.web.registry_pool import RegistryPool
from trivpn.control.web.traffic import TrafficSamples
from trivpn.proto.peer_fields import LIMIT_FIELDS, FieldError, new_peer_fields, policy_changes
from trivpn.proto.usage import UsageRecord
from trivpn.proto.wireguard import Peer, keys
from trivpn.registry import peer_add, peer_rows, store
from trivpn.registry.api import RegistryStore
from trivpn.registry.sessions import Session, latest_by_key
from trivpn.registry.sync import PeerSync

T = TypeVar("T")

ONLINE_WITHIN: Final = 180.0  # s since the latest handshake: a peer is online (as wg-easy)
STATIC_PEER: Final = "a peer of the config file; set it there and reload"
ADD_FIELDS: Final = ("name", *LIMIT_FIELDS)
UPDATE_FIELDS: Final = ("enabled", *LIMIT_FIELDS)


class AdminError(Exception):
    """A request the admin refuses; ``str(e)`` is the message shown to the user."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status  # 400 bad field, 404 unknown peer, 409 conflict
        self.field = field  # the request field at fault (400), else None


@attrs.frozen
class NewPeer:
    peer: dict[str, Any]  # the row, as GET /peers/{name} answers
    config: str = attrs.field(repr=False)  # the wg-quick text: holds the private key, once


class AdminSource(StatusSource, Protocol):
    """What Admin reads of the running server (trivpn.daemon.server.Server), which sits
    above this layer: it is passed in, never imported. The status document's source, and:"""

    @property
    def peersync(self) -> PeerSync | None: ...
    @property
    def started(self) -> float: ...  # wall clock at start


def _registry_error(e: store.RegistryError) -> AdminError:
    if isinstance(e, store.PeerNotFound):
        return AdminError(404, str(e))
    if isinstance(e, store.PeerExists | store.AddressUnavailable | store.AddressesExhausted):
        return AdminError(409, str(e))
    return AdminError(503 if isinstance(e, store.RegistryBusy) else 500, str(e))


def _texts(body: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, str | None]:
    """The body's fields as peer_fields takes them: strings, or null (none); anything else,
    or a field not ``allowed``, is a 400 naming it."""
    allowed = tuple(allowed)
    texts: dict[str, str | None] = {}
    for field, value in body.items():
        if field not in allowed:
            raise AdminError(400, f"{field}: unknown field; expected {', '.join(allowed)}", field)
        if field == "enabled":
            continue  # a bool: the caller's
        if value is not None and not isinstance(value, str):
            raise AdminError(400, f"{field}: expected a string or null", field)
        texts[field] = value
    return texts


def _field_error(e: FieldError) -> AdminError:
    return AdminError(400, str(e), e.field)


class Admin:
    def __init__(
        self,
        source: AdminSource,
        samples: TrafficSamples,
        *,
        clock: Callable[[], float] = time.time,  # the wall clock (the server's own, in tests)
    ) -> None:
        self._source = source
        self._samples = samples
        self._clock = clock
        self._registries = RegistryPool()

    def close(self) -> None:
        """The registry connections kept between calls closed (at shutdown)."""
        self._registries.close()

    # --- reads --------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The status document's shell (without its lists of peers and sessions), uptime,
        totals and the ToyVPN session count."""
        source = self._source
        wallclock = self._clock()
        doc = document_shell(
            source, source.cfg.interface.name, now=trio.current_time(), wallclock=wallclock
        )
        doc["uptime_seconds"] = max(0.0, wallclock - source.started)
        totals = {"peers": 0, "online": 0, "rx_bytes": 0, "tx_bytes": 0}
        front = source.wireguard
        if front is not None:

            def count(peer: Peer) -> None:
                totals["peers"] += 1
                totals["online"] += _online(peer.last_handshake_time, wallclock)
                totals["rx_bytes"] += peer.rx_bytes
                totals["tx_bytes"] += peer.tx_bytes

            await in_slices(front.device, count)
        doc["totals"] = totals
        # no lists: the peers are GET /peers', and an empty one would read as none
        if doc["wireguard"] is not None:
            del doc["wireguard"]["peers"]
        if source.toyvpn is not None:
            del doc["toyvpn"]["sessions"]
            doc["toyvpn"]["session_count"] = len(source.toyvpn.sessions)
        return doc

    async def peers(self) -> list[dict[str, Any]]:
        """Every peer, static (config file) ones first, with their live fields."""
        wallclock = self._clock()
        static = self._source.cfg.wireguard.peers

        fleet: dict[bytes, Session] = {}  # each peer's latest session on any gateway

        def read(reg: RegistryStore) -> list[dict[str, Any]]:
            fleet.update(latest_by_key(reg.sessions()))
            return peer_rows.peer_rows(static, reg.peers(), reg.usage_records(), wallclock)

        rows = await self._in_registry(read)
        if rows is None:
            rows = peer_rows.peer_rows(static, [], {}, wallclock)
        front = self._source.wireguard
        live: dict[str, dict[str, Any]] = {}
        if front is not None:
            entries = await in_slices(
                front.device, functools.partial(peer_entry, front, wallclock=wallclock)
            )
            live = {entry["public_key"]: entry for entry in entries}
        rows = await in_slices(rows, lambda row: self._live(row, live.get(row["public_key"])))
        state = self._source.cfg.state
        if state.database is not None:  # a fleet's gateway: its view of the fleet
            for row in rows:
                key = keys.parse_key(row["public_key"])
                peer_rows.merge_fleet(row, fleet.get(key), state.node)
        return rows

    async def peer(self, name: str) -> dict[str, Any]:
        """One peer's row; 404 when there is none of that name."""
        return self._live(await self._stored_row(name), None, fetch=True)

    async def traffic(self, name: str) -> dict[str, Any]:
        """The peer's throughput over the last hour (rx: received from it, tx: sent to it)."""
        row = await self._stored_row(name)
        series = self._samples.series(keys.parse_key(row["public_key"]))
        return {
            "interval": self._samples.interval,
            "samples": [{"time": t, "rx_bps": rx, "tx_bps": tx} for t, rx, tx in series],
        }

    # --- writes -------------------------------------------------------------------------

    async def add_peer(self, body: Mapping[str, Any]) -> NewPeer:
        """Register a peer (name, expires, quota, rate, rate_down, rate_up) and make its
        config; 400 for a bad field, 409 for a name or address in use or a server that
        cannot give configs (WireGuard off, no public endpoint)."""
        texts = _texts(body, ADD_FIELDS)
        wallclock = self._clock()
        try:
            fields = new_peer_fields(texts, _utc(wallclock))
        except FieldError as e:
            raise _field_error(e) from None
        front = self._source.wireguard
        if front is None:
            raise AdminError(409, "wireguard is off")
        cfg = self._source.cfg
        try:
            peer_add.public_endpoint(cfg, "adding a peer")
        except peer_add.NoPublicEndpoint as e:
            raise AdminError(409, str(e)) from None
        server_public = front.device.public_key

        def add(reg: RegistryStore) -> tuple[peer_add.AddedPeer, dict[str, Any]]:
            added = peer_add.add_peer(reg, cfg, server_public, fields.name, policy=fields.policy)
            return added, peer_rows.registry_row(added.peer, {}, wallclock)

        done = await self._in_registry(add, create=True)
        assert done is not None  # made with create
        added, row = done
        self._poke()
        return NewPeer(self._live(row, None, fetch=True, fresh=True), added.config)

    async def update_peer(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change a registry peer's enabled, expires, quota or rates; 400, 404, 409 static."""
        texts = _texts(body, UPDATE_FIELDS)
        try:
            changes = policy_changes(texts, _utc(self._clock()))
        except FieldError as e:
            raise _field_error(e) from None
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise AdminError(400, "enabled: expected true or false", "enabled")
            changes["enabled"] = body["enabled"]
        if not changes:
            raise AdminError(400, f"nothing to change; give {', '.join(UPDATE_FIELDS)}")
        self._refuse_static(name)

        def update(reg: RegistryStore) -> store.RegistryPeer:
            _, new = reg.update_policy(name, lambda p: dataclasses.replace(p, **changes))
            return new

        peer = await self._registry_peer(name, update)
        self._poke()
        return await self._fresh_row(peer)

    async def reset_usage(self, name: str) -> dict[str, Any]:
        """Zero what counts against the peer's quota now; static peers too (by their key)."""
        static = self._static(name)
        if static is None:
            peer = await self._registry_peer(name, lambda reg: reg.reset_usage(name))
            self._poke()
            return await self._fresh_row(peer)
        key = static.public_key

        def reset(reg: RegistryStore) -> dict[bytes, UsageRecord]:
            reg.reset_key_usage(key)
            return reg.usage_records([key])

        usage = await self._in_registry(reset, create=True)
        self._poke()
        row = peer_rows.static_row(static, usage or {}, self._clock())
        return self._live(row, None, fetch=True, fresh=True)

    async def remove_peer(self, name: str) -> None:
        """Delete a registry peer; 404 unknown, 409 static."""
        self._refuse_static(name)
        await self._registry_peer(name, lambda reg: reg.remove(name))
        self._poke()

    # --- helpers ------------------------------------------------------------------------

    async def _in_registry(
        self, fn: Callable[[RegistryStore], T], *, create: bool = False
    ) -> T | None:
        """``fn`` on the registry, in a worker thread on a connection kept between calls
        (`RegistryPool`); None when there is no registry (and not ``create``). Its errors as
        AdminError."""
        state = self._source.cfg.state
        call = functools.partial(self._registries.call, state, fn, create=create)
        try:
            return await trio.to_thread.run_sync(call)
        except store.RegistryError as e:
            raise _registry_error(e) from e

    async def _registry_peer(
        self, name: str, fn: Callable[[RegistryStore], store.RegistryPeer]
    ) -> store.RegistryPeer:
        """``fn`` on the registry for the peer ``name``; 404 when there is no registry yet."""
        found = await self._in_registry(fn)
        if found is None:
            raise AdminError(404, f"no peer named {name!r} in the registry")
        return found

    async def _stored_row(self, name: str) -> dict[str, Any]:
        """The row of ``name`` as stored (live fields None); 404 when unknown."""
        wallclock = self._clock()
        static = self._static(name)

        def read(reg: RegistryStore) -> dict[str, Any] | None:
            if static is not None:
                usage = reg.usage_records([static.public_key])
                return peer_rows.static_row(static, usage, wallclock)
            peer = reg.find(name)
            if peer is None:
                return None
            usage = reg.usage_records([peer.public_key])
            return peer_rows.registry_row(peer, usage, wallclock)

        row = await self._in_registry(read)
        if row is None and static is not None:
            row = peer_rows.static_row(static, {}, wallclock)
        if row is None:
            raise AdminError(404, f"no peer named {name!r}")
        return row

    async def _fresh_row(self, peer: store.RegistryPeer) -> dict[str, Any]:
        wallclock = self._clock()
        usage = await self._in_registry(lambda reg: reg.usage_records([peer.public_key]))
        row = peer_rows.registry_row(peer, usage or {}, wallclock)
        return self._live(row, None, fetch=True, fresh=True)

    def _live(
        self,
        row: dict[str, Any],
        entry: Mapping[str, Any] | None,
        *,
        fetch: bool = False,
        fresh: bool = False,
    ) -> dict[str, Any]:
        """The row with the server's live fields (``fetch``: its entry read here), ``online``
        and the rates. ``fresh``: the row was just written, and its policy and usage fields
        are newer than the server's until PeerSync applied the write."""
        key = keys.parse_key(row["public_key"])
        front = self._source.wireguard
        if fetch and front is not None:
            peer = front.device.peers.get(key)
            entry = None if peer is None else peer_entry(front, peer, self._clock())
        if entry is not None:
            stored = {field: row[field] for field in peer_rows.ROW_FIELDS}
            peer_rows.merge_live(row, entry)
            if fresh:
                row.update(stored)
        rates = self._samples.rates(key)
        row["online"] = _online(row["latest_handshake"], self._clock())
        row["rx_rate_bps"], row["tx_rate_bps"] = (None, None) if rates is None else rates
        return row

    def _static(self, name: str) -> WireGuardPeerConfig | None:
        return next((p for p in self._source.cfg.wireguard.peers if p.name == name), None)

    def _refuse_static(self, name: str) -> None:
        if self._static(name) is not None:
            raise AdminError(409, f"{name!r} is {STATIC_PEER}")

    def _poke(self) -> None:
        if self._source.peersync is not None:
            self._source.peersync.poke()


def _online(latest_handshake: float | None, wallclock: float) -> bool:
    return latest_handshake is not None and wallclock - latest_handshake < ONLINE_WITHIN


def _utc(wallclock: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(wallclock, datetime.UTC)
