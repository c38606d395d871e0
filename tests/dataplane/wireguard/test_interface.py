"""The interface's settings refuse with a domain error; only the `wg` adapter makes errnos."""

from __future__ import annotations

import errno

import pytest
from support.fakes import FIRST_PORT, fake_udp, make_front

from trivpn.dataplane.wireguard.interface import InterfaceSettingError, Refusal
from trivpn.dataplane.wireguard.uapi_target import uapi_error
from trivpn.proto import uapi


def test_a_refused_fwmark_is_a_domain_error_and_changes_nothing() -> None:
    front = make_front()
    udp = fake_udp(front)
    front.set_fwmark(0x51)
    udp.refuse_mark = True  # as the kernel does without CAP_NET_ADMIN
    with pytest.raises(InterfaceSettingError) as info:
        front.set_fwmark(0x52)
    assert info.value.reason is Refusal.NOT_PERMITTED
    assert str(info.value) == "cannot set the fwmark: Operation not permitted"
    assert front.fwmark == 0x51
    front.set_fwmark(0x51)  # the value it has: nothing to ask the kernel


def test_a_port_in_use_is_a_domain_error_and_the_socket_stays() -> None:
    front = make_front()
    udp = fake_udp(front)
    udp.ports_in_use.add(51821)
    with pytest.raises(InterfaceSettingError) as info:
        front.interface.set_listen_port(51821)
    assert info.value.reason is Refusal.PORT_IN_USE
    assert front.listen_port == FIRST_PORT
    front.interface.set_listen_port(51822)
    assert front.listen_port == 51822 == front.uapi_snapshot().listen_port


def test_the_wg_adapter_answers_with_the_kernels_errno_or_the_reasons() -> None:
    front = make_front()
    udp = fake_udp(front)
    udp.refuse_mark = True
    udp.ports_in_use.add(51821)
    for request, code in (
        ((uapi.SetFwmark(7),), errno.EPERM),
        ((uapi.SetListenPort(51821),), errno.EADDRINUSE),
        ((uapi.SetPrivateKey(uapi.ZERO_KEY),), errno.EOPNOTSUPP),
    ):
        with pytest.raises(uapi.UapiError) as info:
            front.uapi_apply(request)
        assert info.value.errno == code, request
    assert front.fwmark == 0 and front.listen_port == FIRST_PORT

    try:
        raise InterfaceSettingError(Refusal.SYSTEM, "cannot listen on port 1") from OSError(
            errno.EADDRNOTAVAIL, "Cannot assign requested address"
        )
    except InterfaceSettingError as e:
        assert uapi_error(e).errno == errno.EADDRNOTAVAIL  # the kernel's own answer
    assert uapi_error(InterfaceSettingError(Refusal.SYSTEM, "no cause")).errno == errno.EIO
    assert uapi_error(InterfaceSettingError(Refusal.KEY_REQUIRED, "x")).errno == errno.EOPNOTSUPP
