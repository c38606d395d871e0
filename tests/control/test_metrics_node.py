"""A fleet's gateway labels every per-peer series with its node; the others stay as they are."""

from __future__ import annotations

import trio
from prometheus_client.parser import text_string_to_metric_families
from support.status_doc import document

from trivpn.control import metrics


def families(node: str | None) -> dict[str, list[dict[str, str]]]:
    text = trio.run(lambda: metrics.render_document(document(), node=node)).decode()
    return {f.name: [s.labels for s in f.samples] for f in text_string_to_metric_families(text)}


def test_per_peer_series_carry_the_node_in_a_fleet() -> None:
    found = families("gw1")
    alice = {"name": "alice", "public_key": "A" * 43 + "=", "node": "gw1"}
    per_peer = [name for name, labels in found.items() if labels and "public_key" in labels[0]]
    assert "trivpn_wireguard_peer_receive_bytes" in per_peer
    assert "trivpn_peer_blocked" in per_peer and "trivpn_peer_usage_bytes" in per_peer
    for name in per_peer:
        assert all(labels["node"] == "gw1" for labels in found[name]), name
    assert alice in found["trivpn_wireguard_peer_handshakes"]
    assert all("node" not in labels for labels in found["trivpn_packets_dropped"])  # not per peer
    assert all("node" not in labels for labels in found["trivpn_info"])


def test_no_node_label_without_a_fleet() -> None:
    found = families(None)
    assert all("node" not in labels for series in found.values() for labels in series)
    assert {"name": "alice", "public_key": "A" * 43 + "="} in found["trivpn_peer_usage_bytes"]
