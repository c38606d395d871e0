"""The web admin in a real browser: Debian's headless chromium, driven by Selenium, against
`trivpn serve` in a namespace lab, reached through a forwarder from the host's loopback.

client ns (wireguard-go, configured from the config the add page shows) ── server ns (trivpn
serve, [web] listen on its own 127.0.0.1) ── internet ns (iperf3). The browser runs in the
host's namespace and reaches only 127.0.0.1 (the forwarder): every host name it might look up
on its own resolves to nothing. Screenshots of each page go to the test's tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import iperf, netlab, wglab
from support.forward import Forwarder

PREFIX = "tvw"
pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.wireguard_go,
    pytest.mark.lab(PREFIX, clients=1),
]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WEB_PORT = 51821
PASSWORD = "a browser's password, long enough"
RATE = "20Mbit"
RATE_RANGE = (16e6, 21e6)  # bit/s: one TCP stream under a 20Mbit limit (test_limits_e2e)
IPERF_SECONDS = 3
LIVE_WAIT = 10.0  # s: the peers table refreshes every 3 s; a handshake takes about one
CUT_OFF_WAIT = 5.0


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromium-driver (Debian) not installed: run tools/setup")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        # nothing beyond the loopback: no background requests, no name resolves
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait(
    driver: WebDriver, what: str, predicate: Callable[[WebDriver], object], timeout: float = 10
):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(predicate, message=what)


def visible(driver: WebDriver, css: str, timeout: float = 10):  # type: ignore[no-untyped-def]
    def shown(d: WebDriver) -> object:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else False

    return wait(driver, f"{css} shown", shown, timeout)


def attribute_of(driver: WebDriver, css: str, name: str) -> str | None:
    """``name`` of the first element ``css`` finds now, or None (none, or replaced meanwhile:
    the tables are redrawn every few seconds)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].get_attribute(name) if found else None
    except StaleElementReferenceException:
        return None


def text_of(driver: WebDriver, css: str) -> str | None:
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else None
    except StaleElementReferenceException:
        return None


def fill(driver: WebDriver, css: str, value: str) -> None:
    field = visible(driver, css)
    field.clear()
    field.send_keys(value)


def shot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    assert driver.save_screenshot(str(tmp_path / f"{name}.png"))


def down_bps(ns: netlab.Netns) -> float:
    report = iperf.run(ns, netlab.INTERNET_HOST, IPERF_SECONDS, reverse=True)
    return iperf.received_bps(report)


def test_the_forwarder_reaches_a_server_inside_the_lab(lab: netlab.Lab, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("from inside the lab\n")
    web = lab.server.popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8123"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Forwarder(lab.server.name, "127.0.0.1", 8123) as forwarder:
            netlab.wait_for(lambda: _answers(forwarder.url + "/hello.txt"), 10, what="http.server")
            with urllib.request.urlopen(forwarder.url + "/hello.txt", timeout=5) as answer:
                assert answer.read() == b"from inside the lab\n"
    finally:
        web.kill()
        web.wait(10)
    # nothing listens on the host's own 127.0.0.1:8123: the answer came from the lab
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:8123/hello.txt", timeout=2)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_a_peer_added_limited_disabled_and_removed_from_the_browser(
    lab: netlab.Lab,
    server: wglab.LabServer,
    wireguard_go: Callable[..., wglab.WireGuardGo],
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    (client_ns,) = lab.clients
    server.write_config(
        wireguard=wglab.ROUTE_ALL, extra=f'\n[web]\nlisten = "127.0.0.1:{WEB_PORT}"\n'
    )
    passwd = server.ns.run(
        sys.executable, "-m", "trivpn", "web", "passwd", "-c", str(server.config),
        input=PASSWORD + "\n", check=False, timeout=30,
    )  # fmt: skip
    assert passwd.returncode == 0, passwd.stderr
    proc = server.start(server.uapi_ready, f"web: serving http://127.0.0.1:{WEB_PORT}/")

    with (
        Forwarder(server.ns.name, "127.0.0.1", WEB_PORT) as forwarder,
        iperf.server(lab.internet, netlab.INTERNET_HOST),
    ):
        url = forwarder.url

        # log in: a page without a session goes to /login first
        browser.get(url + "/peers")
        wait(browser, "sent to /login", lambda d: d.current_url.endswith("/login"))
        shot(browser, tmp_path, "login")
        fill(browser, "#password", PASSWORD)
        visible(browser, "#login").click()
        wait(browser, "on /peers", lambda d: d.current_url.endswith("/peers"))
        visible(browser, "#peers-table")
        shot(browser, tmp_path, "peers-empty")

        # add a peer; its config is shown once, on the page
        browser.get(url + "/add")
        fill(browser, "#add-name", "phone")
        visible(browser, "#add-submit").click()
        config = visible(browser, "#config-text").text
        assert "[Interface]" in config and "PrivateKey = " in config, config
        assert visible(browser, "#config-qr svg")
        download = visible(browser, "#config-download")
        assert download.get_attribute("download") == "phone.conf"
        assert (download.get_attribute("href") or "").startswith("blob:")
        shot(browser, tmp_path, "peer-added")

        # the peers table, left open: the client connects, the row goes online by itself
        browser.get(url + "/peers")
        row = "#peers-table tbody tr[data-name=phone]"
        visible(browser, row)
        assert attribute_of(browser, f"{row} td[data-field=online]", "data-online") == "false"
        client = wireguard_go(client_ns)
        client_key = wglab.apply_client_config(client, config)
        wglab.wait_online(client_ns)
        assert netlab.tcp_transfer(lab, client_ns, 1 << 20) == netlab.SERVER_EGRESS
        wait(
            browser,
            "the row online without a reload",
            lambda d: attribute_of(d, f"{row} td[data-field=online]", "data-online") == "true",
            LIVE_WAIT,
        )
        handshake = text_of(browser, f"{row} td[data-field=latest_handshake]") or ""
        assert "ago" in handshake or "now" in handshake, handshake
        shot(browser, tmp_path, "peers")

        # its page: a rate limit, measured
        browser.get(url + "/peers/phone")
        assert attribute_of(browser, "#peer", "data-name") == "phone"
        visible(browser, "#peer-disable")
        assert not browser.find_element(By.ID, "peer-enable").is_displayed()  # enabled already
        fill(browser, "#peer-rate-down", RATE)
        fill(browser, "#peer-rate-up", RATE)
        visible(browser, "#peer-save").click()
        netlab.wait_for(
            lambda: server.peer_json("phone")["rate_down_bps"] == 20_000_000, 10, what="the rate"
        )
        assert server.peer_json("phone")["rate_up_bps"] == 20_000_000
        low, high = RATE_RANGE
        measured = down_bps(client_ns)
        assert low <= measured <= high, measured / 1e6
        shot(browser, tmp_path, "peer")

        # disabled from the page: the client is cut off
        visible(browser, "#peer-disable").click()
        wait(
            browser,
            "shown disabled",
            lambda d: attribute_of(d, "#peer-state", "data-state") == "disabled",
        )
        assert server.peer_json("phone")["enabled"] is False
        visible(browser, "#peer-enable")
        assert not browser.find_element(By.ID, "peer-disable").is_displayed()
        netlab.wait_for(
            lambda: not wglab.reaches_internet(client_ns), CUT_OFF_WAIT, what="the client cut off"
        )

        # the server page
        browser.get(url + "/server")
        visible(browser, "#server-details")
        wait(
            browser,
            "the server's public key",
            lambda d: server.keys.public in (text_of(d, "#server-details") or ""),
        )
        shot(browser, tmp_path, "server")

        # removed, after the confirmation
        browser.get(url + "/peers/phone")
        visible(browser, "#peer-remove").click()
        wait(browser, "the confirmation", lambda d: d.switch_to.alert).accept()
        wait(browser, "back on /peers", lambda d: d.current_url.endswith("/peers"))
        wait(browser, "the row gone", lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        names = [p["name"] for p in json.loads(server.trivpn("peer", "list", "--json"))]
        assert "phone" not in names
        netlab.wait_for(
            lambda: client_key not in server.dump().peers, CUT_OFF_WAIT, what="the peer gone"
        )

        # logged out: the pages are closed again
        visible(browser, "#logout").click()
        wait(browser, "on /login", lambda d: d.current_url.endswith("/login"))
        browser.get(url + "/peers")
        wait(browser, "sent to /login", lambda d: d.current_url.endswith("/login"))

    assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log
    assert PASSWORD not in log
    private = next(line for line in config.splitlines() if line.startswith("PrivateKey"))
    assert private.partition("=")[2].strip() not in log


def test_a_web_port_in_use_fails_the_start(lab: netlab.Lab, server: wglab.LabServer) -> None:
    """As for the metrics: supervision restarts the admin when it fails while serving, never
    when it cannot start; the operator hears of it at once, in one line."""
    extra = f'\n[web]\nlisten = "127.0.0.1:{WEB_PORT}"\n'
    out = server.serve_with_port_taken(WEB_PORT, extra)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"trivpn: web.listen: cannot listen on 127.0.0.1:{WEB_PORT}: Address already in use"
    )
    assert "Traceback" not in out.stderr and "restarting in" not in out.stderr
    assert "trivpn" not in lab.server.run("nft", "list", "tables").stdout  # cleaned up
