"""CoAP over DTLS (PSK) end to end with libcoap's own client and server: coap-client-openssl
talks to a local UDP forward of the entry; coap-server-openssl sits behind the exit. The
gateways carry DTLS ciphertext only. coap-client exits 0 even when it fails, so every check
reads its output."""

import re
import subprocess

from sotto_e2e import LOOPBACK, start_pair

PSK = "sotto-e2e-dtls-psk"
IDENTITY = "sotto-e2e-client"
TIME = re.compile(rb"^[A-Z][a-z]{2} [ 0-9]\d \d{2}:\d{2}:\d{2}\s*$")


def coap(port: int, method: str, path: str, *extra: str, key: str = PSK, wait: int = 10) -> subprocess.CompletedProcess:
    argv = ["coap-client-openssl", "-B", str(wait), "-k", key, "-u", IDENTITY, "-m", method, *extra,
            f"coaps://{LOOPBACK}:{port}{path}"]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=wait + 20)


def coap_pair(world):
    dtls_port = world.coap_server(PSK)
    pair = start_pair(world, extra_exposes=[f"udp 5684 {LOOPBACK}:{dtls_port}"], forwards=[("udp", 5684)])
    return pair, pair.forwards["udp 5684"]


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}, stdout {result.stdout!r}, stderr {result.stderr!r}"


def test_coap_client_gets_time_over_dtls_psk_through_the_forward(world):
    pair, port = coap_pair(world)

    result = coap(port, "get", "/time")

    assert TIME.match(result.stdout), describe(result)
    assert b"ERR" not in result.stderr, describe(result)
    entry = pair.entry.tunnels()
    assert entry and entry[0]["datagramsSent"] >= 3 and entry[0]["datagramsReceived"] >= 3, entry


def test_coap_put_then_get_a_payload(world):
    _, port = coap_pair(world)

    put = coap(port, "put", "/sotto-note", "-e", "carried by sotto")
    assert b"ERR" not in put.stderr and put.stdout.strip() == b"", describe(put)
    get = coap(port, "get", "/sotto-note")

    assert get.stdout.strip() == b"carried by sotto", describe(get)


def test_coap_blockwise_put_and_get_of_11_kb(world):
    _, port = coap_pair(world)
    text = "".join(f"line {i:05d} abcdefghijklmnopqrstuvwxyz\n" for i in range(300))
    source = world.dir / "big.txt"
    source.write_text(text)
    target = world.dir / "back.txt"

    put = coap(port, "put", "/big", "-b", "64", "-f", str(source), wait=20)
    assert b"ERR" not in put.stderr, describe(put)
    get = coap(port, "get", "/big", "-b", "64", "-o", str(target), wait=20)

    assert b"ERR" not in get.stderr, describe(get)
    assert target.exists(), describe(get)
    assert target.read_text() == text


def test_a_wrong_dtls_key_gets_no_answer_and_the_gateways_carry_on(world):
    """The gateways never see the DTLS keys: a wrong PSK fails between client and server only."""
    pair, port = coap_pair(world)

    bad = coap(port, "get", "/time", key="not-the-key", wait=4)
    assert not TIME.match(bad.stdout), describe(bad)
    good = coap(port, "get", "/time")

    assert TIME.match(good.stdout), describe(good)
    assert [t["state"] for t in pair.entry.tunnels()] == ["established"]


def test_several_coap_clients_one_after_another(world):
    _, port = coap_pair(world)
    for i in range(5):
        result = coap(port, "get", "/time")
        assert TIME.match(result.stdout), f"client {i}: {describe(result)}"
