"""No single socket can end the VPN: a server at its descriptor limit keeps forwarding.

client ns (wireguard-go 10.8.0.2) ── server ns (trivpn serve, NAT) ── internet ns. The
server's limit on open files is lowered (prlimit) to what it has open plus a few, and a
holder in the server ns opens more connections to the control and UAPI sockets than that
leaves: accept() fails with EMFILE on both. The connection caps alone keep a plain flood from
getting there. The WireGuard client's ping and TCP transfer must go on meanwhile, and `wg show`
and `trivpn status` answer again once the limit is raised and the holder hangs up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from support import netlab, wglab

from trivpn.control import status_socket

pytestmark = [
    pytest.mark.root,
    pytest.mark.wireguard_go,
    pytest.mark.slow,
    pytest.mark.lab("tvfd", clients=1),
]

SPARE_FDS = 3  # descriptors the server may still open: a few connections get in, then EMFILE
# More than the sockets' connection caps (8 and 16) and listen queues let in: each queue fills
HELD = {"control": 12, "uapi": 20}
TRANSFER = 2_000_000  # bytes through the tunnel while the server is at its limit

# Connects to each PATH COUNT times without blocking (a full queue refuses the rest), prints
# how many it holds, and holds them until its stdin closes.
HOLDER = r"""
import socket, sys
held = []
for path, count in zip(sys.argv[1::2], sys.argv[2::2]):
    for _ in range(int(count)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except OSError:
            s.close()
        else:
            held.append(s)
print(len(held), flush=True)
sys.stdin.read()
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limits(pid: int) -> tuple[str, str]:
    """The soft and hard RLIMIT_NOFILE of ``pid`` as /proc shows them."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


def set_nofile(pid: int, soft: str, hard: str) -> None:
    # prlimit names no network: a process's limit, set from anywhere
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:{hard}"], check=True)


@contextmanager
def holding(ns: netlab.Netns, paths: dict[str, int]) -> Iterator[int]:
    """Connections held to each path (as many as it lets in), closed on the way out."""
    argv = [sys.executable, "-c", HOLDER]
    for path, count in paths.items():
        argv += [path, str(count)]
    holder = ns.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        yield int(holder.stdout.readline())
        holder.stdin.close()
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def wg_show_answers(server: wglab.LabServer) -> bool:
    try:
        done = server.ns.run("wg", "show", server.ifname, check=False, timeout=5)
    except subprocess.TimeoutExpired:  # still queued behind the held connections
        return False
    return done.returncode == 0


def test_a_server_out_of_descriptors_keeps_forwarding_and_its_sockets_come_back(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wg_client: Callable[..., wglab.WireGuardGo],
) -> None:
    ns = lab.clients[0]
    wg = wg_client(ns, "10.8.0.2")
    server.write_config(wglab.peer_table("alice", wg.public_key, "10.8.0.2/32"))
    proc = server.start(server.uapi_ready, "control: `trivpn status` answers on")
    wglab.wait_online(ns)

    pid = proc.proc.pid  # `ip netns exec` execs: the server itself
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"trivpn" in f.read()
    soft, hard = nofile_limits(pid)
    limit = open_fds(pid) + SPARE_FDS
    set_nofile(pid, str(limit), hard)  # the soft limit: a lowered hard one may not rise again
    try:
        paths = {
            str(status_socket.socket_path(server.ifname)): HELD["control"],
            str(server.socket_path): HELD["uapi"],
        }
        with holding(lab.server, paths) as held:
            assert held > SPARE_FDS, "the holder could not connect"
            for name in ("control", "uapi"):
                proc.wait_log(f"{name}: cannot accept connections: EMFILE (Too many open files)")
            assert open_fds(pid) >= limit - 1  # at the limit (a timed-out client may have left)

            # the tunnel does not care: it needs no new descriptor
            assert wglab.reaches_internet(ns, count=3)
            assert netlab.tcp_transfer(lab, ns, TRANSFER) == netlab.SERVER_EGRESS
            assert proc.proc.poll() is None, proc.log()
    finally:
        if proc.proc.poll() is None:  # raised back; the holder has hung up
            set_nofile(pid, soft, hard)

    netlab.wait_for(lambda: wg_show_answers(server), 20, what="`wg show` answering again")
    assert server.dump().peers[wg.public_key].transfer_rx > TRANSFER
    assert "interface: " + server.ifname in server.trivpn("status")
    for name in ("control", "uapi"):
        proc.wait_log(f"{name}: accepting again after")
    assert wglab.reaches_internet(ns)

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log and "restarting in" not in log  # no task had to restart


def test_a_metrics_port_in_use_still_fails_the_start(
    lab: netlab.Lab, server: wglab.LabServer
) -> None:
    # Supervision restarts a control-plane task that fails while serving, never one that
    # cannot start: the operator hears of it at once, as before.
    port = 9586
    out = server.serve_with_port_taken(port, f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"trivpn: metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in out.stderr and "restarting in" not in out.stderr
    assert "trivpn" not in lab.server.run("nft", "list", "tables").stdout  # cleaned up
