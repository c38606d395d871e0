"""The control plane's per-peer work is done in slices: with thousands of peers the status
document, its JSON and the metrics text come out the same as in one walk, while another
task runs between the slices (forwarding never waits on a request)."""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.fakes import make_front
from support.status_doc import document, fake_server

from trivpn.config import WireGuardPeerConfig
from trivpn.control import metrics, status_socket, uapi_server
from trivpn.proto import uapi
from trivpn.proto.wireguard import crypto

PEERS = 2_300  # several slices and a part of one


def many_peers() -> dict[str, Any]:
    doc = document()
    template = doc["wireguard"]["peers"][0]
    doc["wireguard"]["peers"] = [
        {**template, "name": f"p{i}", "public_key": f"{i:043d}=", "rx_bytes": i}
        for i in range(PEERS)
    ]
    return doc


async def turns_of_another_task(work: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """``work()``'s result and how often a task that only yields ran meanwhile: about once
    per checkpoint of ``work`` (trio may run the two in either order in a batch, so one
    turn may fall just before ``work`` starts or after it ends: hence the ``- 1`` below)."""
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.sleep(0)
        start = turns
        result = await work()
        done = True
    return result, turns - start


class _All:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Any:
        return metrics.collect(self.doc)


async def test_the_metrics_text_is_made_in_slices_and_is_the_one_walks_text() -> None:
    doc = many_peers()
    text, turns = await turns_of_another_task(lambda: metrics.render_document(doc))
    assert text == generate_latest(_All(doc))  # type: ignore[arg-type]
    assert turns >= PEERS // metrics.PEER_SLICE - 1
    families = {f.name: f.samples for f in text_string_to_metric_families(text.decode())}
    received = families["trivpn_wireguard_peer_receive_bytes"]
    assert [s.value for s in received] == list(range(PEERS))


async def test_the_status_json_is_encoded_in_slices_and_is_json_dumps() -> None:
    doc = many_peers()
    before = copy.deepcopy(doc)
    encoded, turns = await turns_of_another_task(lambda: status_socket.encode_document(doc))
    assert encoded == json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    assert json.loads(encoded) == doc == before  # the document itself untouched
    assert turns >= PEERS // status_socket.SLICE - 1


async def test_slices_of_a_list_are_the_whole_list() -> None:
    items = list(range(1234))
    result, turns = await turns_of_another_task(
        lambda: status_socket.in_slices(items, lambda n: n * 2)
    )
    assert result == [n * 2 for n in items]
    assert turns >= len(items) // status_socket.SLICE - 1


async def test_the_live_document_is_the_one_walks_document(
    mock_clock: trio.testing.MockClock,  # trio's clock stands still: idle_seconds agree
) -> None:
    server = fake_server()
    live = await status_socket.live_document(server, "tvc0")
    walked = status_socket.status_document(
        server, "tvc0", now=trio.current_time(), wallclock=live["time"]
    )
    assert live == walked
    assert live["wireguard"]["peers"] and live["toyvpn"] is not None


async def test_a_wg_get_is_made_in_slices_and_is_the_one_walks_answer() -> None:
    front = make_front(
        *(
            WireGuardPeerConfig(
                name=f"p{i}",
                public_key=crypto.public_key(crypto.clamp(i.to_bytes(4, "little") * 8)),
                allowed_ips=(ipaddress.ip_network(ipaddress.IPv4Address(0x0A100000 + i)),),
            )
            for i in range(1, 1201)
        )
    )
    answer, turns = await turns_of_another_task(lambda: uapi_server.sliced_get(front))
    assert answer == uapi.format_get(front.uapi_snapshot())
    assert answer.count(b"public_key=") == 1200
    assert turns >= 1200 // uapi_server.GET_SLICE - 1
