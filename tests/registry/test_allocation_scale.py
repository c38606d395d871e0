"""Address allocation at scale: always the lowest free address (a property, against a plain
model), and an add whose database work does not grow with the number of peers."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.proto.ip import IPAddress
from trivpn.proto.wireguard import crypto, keys
from trivpn.registry.store import AddressesExhausted, AddressPlan, Registry

V4 = ipaddress.IPv4Network("10.9.0.0/27")
V6 = ipaddress.IPv6Network("fd00:9::/123")
PLAN = AddressPlan(
    subnets=(V4, V6),
    reserved=(
        ipaddress.ip_network("10.9.0.1/32"),
        ipaddress.ip_network("10.9.0.4/30"),
        ipaddress.ip_network("fd00:9::1/128"),
    ),
)


def pub(n: int) -> bytes:
    return crypto.public_key(keys.generate_private_key(lambda k: n.to_bytes(4, "big") * (k // 4)))


def lowest_free(version: int, taken: set[IPAddress]) -> IPAddress | None:
    """The model: the first host of the subnet, in order, neither reserved nor taken."""
    for subnet in PLAN.subnets:
        if subnet.version != version:
            continue
        for address in subnet.hosts():
            if address not in taken and not any(address in n for n in PLAN.reserved):
                return address
    return None


# (who, what, peer number): who is 0 (the registry under test) or 1 (another connection to
# the same file, whose changes the first must notice); what is "add" or "remove"
operations = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from(["add", "remove"]), st.integers(0, 40)),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_an_add_gets_the_lowest_free_address_of_each_family(
    ops: list[tuple[int, str, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "peers.db"
        with Registry.open(path) as first, Registry.open(path) as second:
            registries = (first, second)
            model: dict[str, tuple[IPAddress, ...]] = {}
            for who, what, n in ops:
                name, registry = f"p{n}", registries[who]
                if what == "remove":
                    if name in model:
                        registry.remove(name)
                        del model[name]
                    continue
                if name in model:
                    continue
                taken = {a for addresses in model.values() for a in addresses}
                want = (lowest_free(4, taken), lowest_free(6, taken))
                if None in want:
                    try:
                        registry.add(name, pub(n), None, PLAN)
                    except AddressesExhausted:
                        continue
                    raise AssertionError("an add succeeded with a family exhausted")
                peer = registry.add(name, pub(n), None, PLAN)
                assert peer.addresses == want
                model[name] = peer.addresses
            assert {p.name: p.addresses for p in first.peers()} == model


def test_the_work_of_an_add_does_not_grow_with_the_peers(tmp_path: Path) -> None:
    """SQLite virtual-machine steps and statements per add, at 100 peers and at 3,000: the
    same (B-tree lookups grow with the depth only). Reading every stored address, as a
    quadratic registry did, multiplies the steps by 30."""
    plan = AddressPlan(subnets=(ipaddress.IPv4Network("10.0.0.0/16"),))
    registry = Registry.open(tmp_path / "peers.db")
    db = registry._db
    steps = 0
    statements = 0

    def count_steps() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    def count_statement(_sql: str) -> None:
        nonlocal statements
        statements += 1

    def measure(first: int, count: int) -> tuple[float, float]:
        nonlocal steps, statements
        steps = statements = 0
        db.set_progress_handler(count_steps, 10)
        db.set_trace_callback(count_statement)
        for n in range(first, first + count):
            registry.add(f"p{n}", pub(n), None, plan)
        db.set_progress_handler(None, 10)
        db.set_trace_callback(None)
        return steps / count, statements / count

    for n in range(100):
        registry.add(f"p{n}", pub(n), None, plan)
    small = measure(100, 20)
    for n in range(120, 3000):
        registry.add(f"p{n}", pub(n), None, plan)
    large = measure(3000, 20)
    registry.close()
    assert large[1] == small[1]  # statements per add
    assert large[0] <= small[0] * 1.3  # VM steps per add
