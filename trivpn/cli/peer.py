"""`trivpn peer add | list | show | remove | set | enable | disable | reset-usage`: the peer
registry from the command line.

`peer add` prints the client's wg-quick config once: its private key is made here and never
stored, so a lost config cannot be shown again (remove the peer and add it anew, or add it
with ``--public-key`` of a key the user keeps). Output that holds a private key goes to
stdout or to a file created 0600 that must not exist yet.

Endpoint, latest handshake and transfer come from the running server, through its control
socket (root only); when it cannot be reached they are "-", and `peer list` says why on stderr.
A peer's state (active, disabled, expired, over quota), its limits and its usage: see
trivpn.cli.peer_policy; a running server follows a change within a second.

What a field may be, the rows and the addition itself are shared with the web admin:
trivpn.proto.peer_fields, trivpn.registry.peer_rows, trivpn.registry.peer_add.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from trivpn.cli import configfile, peer_policy, status
from trivpn.cli.errors import EXIT_CONFIG, CliError
from trivpn.cli.keys import warn_if_world_readable_stdout
from trivpn.cli.qr import terminal_qr
from trivpn.cli.subcommands import add_subcommands
from trivpn.proto.peer_fields import FieldError, NewPeerFields, new_peer_fields
from trivpn.proto.usage import NO_USAGE
from trivpn.proto.wireguard import curve25519, keys

# The config and the registry are imported by the commands that use them: `trivpn genkey`
# builds these parsers too, and must not pay for cattrs and SQLite (tests/cli/test_imports.py).
if TYPE_CHECKING:
    from trivpn.config import Config
    from trivpn.registry import store
    from trivpn.registry.api import RegistryStore


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """`peer` and its subcommands."""
    psub = add_subcommands(parser, dest="peer_command", required=True, metavar="PEER_COMMAND")
    psub.add_command(
        "add", "register a peer and print its client config (wg-quick format)", _add_arguments
    )
    psub.add_command(
        "list",
        "the peers of the registry and of the config file",
        partial(_named_arguments, cmd_peer_list, named=False, as_json=True),
    )
    psub.add_command(
        "show", "one peer's details", partial(_named_arguments, cmd_peer_show, as_json=True)
    )
    psub.add_command(
        "remove",
        "delete a peer from the registry; its address is freed",
        partial(_named_arguments, cmd_peer_remove),
    )
    psub.add_command(
        "set",
        "change a registry peer's settings; a running server applies them within a second",
        _set_arguments,
    )
    psub.add_command(
        "reset-usage",
        "zero what counts against a peer's quota now (the lifetime counters stay)",
        partial(_named_arguments, cmd_peer_reset_usage, logs=True),
    )
    for command, enabled, what in (
        ("enable", True, "let a disabled peer connect again"),
        ("disable", False, "block a peer: its sessions end, its handshakes get no answer"),
    ):
        psub.add_command(command, what, partial(_named_arguments, cmd_peer_set, enabled=enabled))


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Register a peer with the next free address(es) and print its client "
        "config. The private key is not stored: keep the config, it cannot be shown again."
    )
    p.add_argument("name", help="1 to 64 of A-Z a-z 0-9 _ . @ -")
    p.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="A",
        help="the peer's address instead of the next free one (once per IP version; a "
        "version not given is still allocated)",
    )
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NET",
        help="a network behind the peer that the server routes to it (a site's LAN, e.g. "
        "192.168.50.0/24); repeat or separate with commas",
    )
    p.add_argument(
        "--public-key",
        metavar="K",
        help="the client's own public key; no key pair is made and the printed config "
        "leaves PrivateKey for the user to fill in",
    )
    p.add_argument("--disabled", action="store_true", help="add it blocked (`peer enable` later)")
    peer_policy.add_limit_options(p)
    p.add_argument("--qr", action="store_true", help="also print the config as a QR code")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write the config to FILE (mode 0600, must not exist) instead of stdout; "
        "a FILE ending in .png gets a QR code image",
    )
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_peer_add)


def _set_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    peer_policy.add_limit_options(p, clearing="; never clears it")
    configfile.add_config_option(p)
    p.set_defaults(func=cmd_peer_set, logs=False)


def _named_arguments(
    func: Callable[[argparse.Namespace], int],
    p: argparse.ArgumentParser,
    *,
    named: bool = True,
    as_json: bool = False,
    logs: bool = False,
    **defaults: object,
) -> None:
    """A peer's name (if `named`), ``--json`` (if `as_json`) and the config."""
    if named:
        p.add_argument("name")
    if as_json:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    configfile.add_config_option(p)
    p.set_defaults(func=func, logs=logs, **defaults)


def _registry_error(e: store.RegistryError) -> CliError:
    from trivpn.registry import store

    if isinstance(e, store.StateDirUnusable):
        return CliError(f"state.dir: {str(e.directory)!r} — cannot create it: {e.reason}", 2)
    mistake = isinstance(e, store.PeerExists | store.PeerNotFound | store.AddressUnavailable)
    return CliError(str(e), EXIT_CONFIG if mistake else 1)


@contextmanager
def _open_registry(cfg: Config, *, create: bool) -> Iterator[RegistryStore | None]:
    """The registry of the config; None when it does not exist and not `create`."""
    from trivpn.registry import store
    from trivpn.registry.opener import open_registry

    try:
        reg = open_registry(cfg.state, create=create)
    except store.RegistryError as e:
        raise _registry_error(e) from e
    if reg is None:
        yield None
        return
    with reg:
        try:
            yield reg
        except store.RegistryError as e:
            raise _registry_error(e) from e


# --- peer add -------------------------------------------------------------------------------


def _new_peer_fields(args: argparse.Namespace) -> NewPeerFields:
    """Name, addresses, routes and policy of `peer add`, checked before anything is opened."""
    texts = {"name": args.name, **peer_policy.limit_texts(args)}
    for field, given in (("address", args.address), ("route", args.route)):
        if given:
            texts[field] = ",".join(given)
    try:
        return new_peer_fields(texts, peer_policy.utcnow(), enabled=not args.disabled)
    except FieldError as e:
        raise peer_policy.field_error(e) from None


def _server_public_key(cfg: Config) -> bytes:
    """The server's public key; like `serve`, makes the key file on first use."""
    from trivpn.daemon.keyfile import (
        KeyDirectoryMissing,
        KeyFileError,
        PrivateKeyNotSet,
        server_private_key,
    )

    try:
        private = server_private_key(cfg.wireguard, cfg.state.dir)
    except PrivateKeyNotSet as e:
        raise CliError(f"{e} — required by `peer add`", EXIT_CONFIG) from e
    except KeyDirectoryMissing as e:
        raise CliError(str(e), EXIT_CONFIG) from e
    except (KeyFileError, OSError) as e:
        raise CliError(str(e)) from e
    return curve25519.public_key(private)


@contextmanager
def _new_private_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file, mode 0600 from the start; removed again if the block fails."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise CliError(f"--output: {path} exists; choose another name or remove it", 2) from None
    except OSError as e:
        raise CliError(f"--output: cannot create {path}: {e.strerror}", 2) from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def cmd_peer_add(args: argparse.Namespace) -> int:
    from trivpn.registry import peer_add

    cfg = configfile.load(args.config)
    try:
        peer_add.public_endpoint(cfg, "`peer add`")
    except peer_add.NoPublicEndpoint as e:
        raise CliError(str(e), EXIT_CONFIG) from e
    fields = _new_peer_fields(args)
    output = Path(args.output) if args.output else None
    as_png = output is not None and output.suffix.lower() == ".png"
    client_keys: tuple[bytes | None, bytes]
    if args.public_key is not None:
        try:
            client_keys = (None, keys.parse_key(args.public_key))
        except ValueError as e:
            raise CliError(f"--public-key: {e}", 2) from e
        if args.qr or as_png:
            raise CliError(
                "--public-key: the config has no private key to put in a QR code; "
                "without --qr or a .png, the printed config says where to add it",
                2,
            )
    else:
        client_keys = peer_add.new_key_pair()
    if not cfg.wireguard.enabled:
        print(
            "trivpn: note: wireguard.enabled is false; the peer can connect once it is on",
            file=sys.stderr,
        )
    server_public = _server_public_key(cfg)

    with _maybe_file(output) as out, _open_registry(cfg, create=True) as reg:
        assert reg is not None
        added = peer_add.add_peer(
            reg,
            cfg,
            server_public,
            fields.name,
            client_keys=client_keys,
            addresses=fields.addresses,
            routes=fields.routes,
            policy=fields.policy,
        )
        _emit(added.config, out, as_png=as_png, qr=args.qr)
    peer = added.peer
    shown = ", ".join(map(str, peer.addresses + peer.routes))
    where = f" in {output}" if output else ""
    print(
        f"trivpn: added peer {peer.name!r} ({shown}{peer_policy.policy_note(fields.policy)}); "
        f"its config{where} "
        "is shown only now: the private key is not stored",
        file=sys.stderr,
    )
    return 0


@contextmanager
def _maybe_file(path: Path | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
    else:
        with _new_private_file(path) as f:
            yield f


def _emit(text: str, out: IO[bytes] | None, *, as_png: bool, qr: bool) -> None:
    if out is None:
        warn_if_world_readable_stdout()
        sys.stdout.write(text)
    elif as_png:
        from trivpn.registry.clientconf import qr_code

        qr_code(text).save(out, kind="png", scale=6, border=4)
    else:
        out.write(text.encode())
    if qr:
        if out is None:
            sys.stdout.write("\n")
        sys.stdout.write(terminal_qr(text, colored=sys.stdout.isatty()))
    sys.stdout.flush()


# --- peer list / show / remove --------------------------------------------------------------


def _rows(cfg: Config) -> list[dict[str, Any]]:
    """Every peer, static (config file) ones first, as plain values (live columns None);
    state and usage as the registry has them."""
    from trivpn.registry import peer_rows

    now = time.time()
    with _open_registry(cfg, create=False) as reg:
        peers, usage = ([], {}) if reg is None else (reg.peers(), reg.usage_records())
    return peer_rows.peer_rows(cfg.wireguard.peers, peers, usage, now)


def _fill_live(cfg: Config, rows: list[dict[str, Any]]) -> None:
    """Endpoint, latest handshake, transfer, state and usage from the running server, when
    it answers.

    A server that is not running leaves them None quietly; any other reason is said on stderr.
    """
    from trivpn.control import status_client
    from trivpn.registry.peer_rows import merge_live

    try:
        document = status_client.query_status(status_client.socket_path(cfg.interface.name))
    except status_client.NotRunning:
        return
    except status_client.ControlUnavailable as e:
        print(f"trivpn: live status unavailable: {e}", file=sys.stderr)
        return
    wireguard = document.get("wireguard") or {}
    live = {peer["public_key"]: peer for peer in wireguard.get("peers", [])}
    for row in rows:
        entry = live.get(row["public_key"])
        if entry is not None:
            merge_live(row, entry)


def _fill_fleet(cfg: Config, rows: list[dict[str, Any]]) -> None:
    """A fleet's gateway: each peer's latest handshake on any gateway and its node."""
    if cfg.state.database is None:
        return
    from trivpn.registry.peer_rows import merge_fleet
    from trivpn.registry.sessions import latest_by_key

    with _open_registry(cfg, create=False) as reg:
        latest = {} if reg is None else latest_by_key(reg.sessions())
    for row in rows:
        merge_fleet(row, latest.get(keys.parse_key(row["public_key"])), cfg.state.node)


_COLUMNS: Final = (
    ("NAME", "name"),
    ("STATE", "state"),
    ("USAGE", "usage"),
    ("EXPIRES", "expires"),
    ("RATE", "rate"),
    ("ADDRESS", "addresses"),
    ("PUBLIC KEY", "public_key"),
    ("ENDPOINT", "endpoint"),
    ("LATEST HANDSHAKE", "latest_handshake"),
    ("NODE", "node"),
    ("RECEIVED", "received"),
    ("SENT", "sent"),
)


def _display(row: dict[str, Any], now: float) -> dict[str, Any]:
    """The row with handshake time and byte counts as a person reads them."""
    shown = dict(row)
    if row["latest_handshake"] is not None:
        shown["latest_handshake"] = status.format_handshake(row["latest_handshake"], now)
    elif row["endpoint"] is not None or row["received"] is not None:
        shown["latest_handshake"] = "never"  # the server knows the peer: no handshake yet
    for key in ("received", "sent"):
        if row[key] is not None:
            shown[key] = status.format_bytes(row[key])
    shown["state"] = row["state"].replace("_", "-")  # over_quota reads over-quota
    shown["expires"] = row["expires"] or "never"
    shown["usage"] = peer_policy.usage_cell(row)
    shown["rate"] = peer_policy.rate_cell(row)
    shown["lifetime"] = peer_policy.lifetime_cell(row)
    return shown


def _cell(value: object) -> str:
    """A value as shown; "-" for a live column the running server did not fill in."""
    if value is None:
        return status.NONE
    if isinstance(value, list):
        return ", ".join(map(str, value)) or status.NONE
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    fleet = any("node" in row for row in rows)  # NODE: a fleet's gateway only
    columns = [(title, key) for title, key in _COLUMNS if fleet or key != "node"]
    headers = [title for title, _ in columns]
    return status.table(headers, ([_cell(row[key]) for _, key in columns] for row in rows))


def cmd_peer_list(args: argparse.Namespace) -> int:
    cfg = configfile.load(args.config)
    rows = _rows(cfg)
    _fill_live(cfg, rows)
    _fill_fleet(cfg, rows)
    if args.json:
        status.print_json(rows)
    elif rows:
        now = time.time()
        print(_table([_display(row, now) for row in rows]))
    else:
        print("no peers (add one with `trivpn peer add NAME`)")
    return 0


def cmd_peer_show(args: argparse.Namespace) -> int:
    cfg = configfile.load(args.config)
    found = [row for row in _rows(cfg) if row["name"] == args.name]
    if not found:
        raise CliError(f"no peer named {args.name!r}", EXIT_CONFIG)
    _fill_live(cfg, found[:1])
    _fill_fleet(cfg, found[:1])
    if args.json:
        status.print_json(found[0])
        return 0
    row = _display(found[0], time.time())
    transfer = None
    if row["received"] is not None:
        transfer = f"{row['received']} received, {row['sent']} sent"
    fields = [
        ("peer", row["name"]),
        ("source", "config file" if row["source"] == "config" else "registry"),
        ("state", row["state"]),
        ("usage", row["usage"]),
        ("expires", row["expires"]),
        ("rate", row["rate"]),
        ("lifetime", row["lifetime"]),
        ("public key", row["public_key"]),
        ("addresses", row["addresses"]),
        ("created", row["created"]),
        ("endpoint", row["endpoint"]),
        ("latest handshake", row["latest_handshake"]),
        *([("node", row["node"])] if "node" in row else []),
        ("transfer", transfer),
    ]
    for label, value in fields:
        print(f"{label}: {_cell(value)}")
    return 0


def _refuse_static(cfg: Config, name: str, what: str) -> None:
    if any(p.name == name for p in cfg.wireguard.peers):
        raise CliError(f"{name!r} is a peer of the config file ({cfg.source}); {what}", EXIT_CONFIG)


def cmd_peer_remove(args: argparse.Namespace) -> int:
    cfg = configfile.load(args.config)
    _refuse_static(cfg, args.name, "remove it there")
    with _open_registry(cfg, create=False) as reg:
        if reg is None:
            raise CliError(f"no peer named {args.name!r} in the registry", EXIT_CONFIG)
        peer = reg.remove(args.name)
    shown = ", ".join(map(str, peer.addresses))
    print(
        f"trivpn: removed peer {peer.name!r}; its address(es) {shown} are free again",
        file=sys.stderr,
    )
    return 0


def cmd_peer_set(args: argparse.Namespace) -> int:
    """`peer set`, `peer enable`, `peer disable`: one registry transaction each."""
    from trivpn.registry.peer_rows import state_of

    changes = peer_policy.set_changes(args)
    cfg = configfile.load(args.config)
    _refuse_static(
        cfg, args.name, "set enabled, expires, quota or rates there and reload the server (SIGHUP)"
    )
    with _open_registry(cfg, create=False) as reg:
        if reg is None:
            raise CliError(f"no peer named {args.name!r} in the registry", EXIT_CONFIG)
        old, new = reg.update_policy(args.name, lambda p: peer_policy.changed(p, changes))
        record = reg.usage_records([new.public_key]).get(new.public_key, NO_USAGE)
    now = time.time()
    before = state_of(old.policy, record, now)
    after = state_of(new.policy, record, now)
    said = [] if before == after else [f"{before} -> {after}"]
    said += peer_policy.change_note(old.policy, new.policy)
    print(
        f"trivpn: peer {new.name!r}: {', '.join(said) or 'unchanged'} ({after})",
        file=sys.stderr,
    )
    return 0


def cmd_peer_reset_usage(args: argparse.Namespace) -> int:
    """Zero a peer's usage periods; a static peer's usage is kept by its public key."""
    from trivpn.registry.peer_rows import state_of

    cfg = configfile.load(args.config)
    static = next((p for p in cfg.wireguard.peers if p.name == args.name), None)
    with _open_registry(cfg, create=static is not None) as reg:
        if reg is None:
            raise CliError(f"no peer named {args.name!r} in the registry", EXIT_CONFIG)
        if static is None:
            policy = reg.reset_usage(args.name).policy
        else:
            reg.reset_key_usage(static.public_key)
            policy = static.policy
    print(
        f"trivpn: peer {args.name!r}: usage reset; the lifetime counters stay "
        f"({state_of(policy, NO_USAGE, time.time())})",
        file=sys.stderr,
    )
    return 0
