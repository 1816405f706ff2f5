"""Real SIP from sipp (design section 7), captured on loopback, parsed by the SIP parser.

``sipp -sn uas`` answers five calls of ``sipp -sn uac`` on 127.0.0.1 only; tshark captures the
exchange to a pcapng; every datagram must parse as well-formed SIP, both whole and as the
128-byte sFlow sample an agent would send of it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter

import pytest

from vghelpers import need_tool, require
from voxguard.ingest.decode.flows import SipFlag, SipMethod, addr_to_halves, empty_flows
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.decode.sip import parse_sip
from voxguard.ingest.encode.sflow import SflowEncoder
from voxguard.ingest.pcapio import UdpDatagram, iter_udp_payloads

CALLS = 5


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def sipp_capture(tmp_path_factory: pytest.TempPathFactory) -> list[UdpDatagram]:
    sipp, tshark = str(need_tool("sipp")), str(need_tool("tshark"))
    out = tmp_path_factory.mktemp("sipp") / "sipp.pcapng"
    uas_port, uac_port = _free_udp_port(), _free_udp_port()
    cap = subprocess.Popen(
        [
            tshark,
            "-i",
            "lo",
            "-f",
            f"udp port {uas_port}",
            "-a",
            "duration:30",
            "-c",
            str(6 * CALLS),
            "-w",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = b""
    deadline = time.monotonic() + 15
    assert cap.stderr is not None
    while time.monotonic() < deadline and cap.poll() is None:
        line = cap.stderr.readline()
        started += line
        if b"Capturing on" in line:
            break
    if cap.poll() is not None or b"Capturing on" not in started:
        _stop(cap, 1)
        require(False, f"cannot capture on loopback here: {started.decode(errors='replace').strip()[-300:]}")
    time.sleep(0.5)  # let the capture filter settle before the first packet
    common = ["-i", "127.0.0.1", "-m", str(CALLS), "-nostdin", "-timeout", "20s", "-timeout_error"]
    uas = subprocess.Popen(
        [sipp, "-sn", "uas", "-p", str(uas_port), *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        uac = subprocess.run(
            [sipp, "-sn", "uac", f"127.0.0.1:{uas_port}", "-p", str(uac_port), "-r", "10", *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=40,
        )
    finally:
        _stop(uas, 10)
        _stop(cap, 15)
    assert uac.returncode == 0, f"sipp uac failed with exit code {uac.returncode}"
    return list(iter_udp_payloads(out))


def test_sipp_calls_parse_as_sip(sipp_capture: list[UdpDatagram]) -> None:
    assert len(sipp_capture) == 6 * CALLS  # INVITE, 180, 200, ACK, BYE, 200 per call
    kinds: Counter[object] = Counter()
    for dg in sipp_capture:
        assert dg.src == dg.dst == "127.0.0.1"
        info = parse_sip(dg.payload)
        assert info.error is None, (info.error, dg.payload[:200])
        assert info.flags & SipFlag.CALL_ID
        kinds[info.status if info.method == SipMethod.RESPONSE else SipMethod.NAMES[info.method]] += 1
        if info.method == SipMethod.INVITE:
            assert info.flags & SipFlag.SDP
        assert not info.flags & SipFlag.SCANNER_UA
    assert kinds == {"INVITE": CALLS, "ACK": CALLS, "BYE": CALLS, 180: CALLS, 200: 2 * CALLS}


def test_sipp_messages_as_sflow_samples(sipp_capture: list[UdpDatagram]) -> None:
    """The same messages sampled by an sFlow agent (128-byte headers): method seen, nothing malformed."""
    flows = empty_flows(len(sipp_capture))
    for row, dg in zip(flows, sipp_capture, strict=True):
        row["src_hi"], row["src_lo"] = addr_to_halves(dg.src)
        row["dst_hi"], row["dst_lo"] = addr_to_halves(dg.dst)
        row["proto"], row["src_port"], row["dst_port"], row["sampling"] = 17, dg.sport, 5060, 1000
    enc = SflowEncoder("192.0.2.1", header_bytes=128)
    datagrams = enc.flow_datagrams(flows, [dg.payload for dg in sipp_capture])
    batch = SflowDecoder().decode_batch([(d, "192.0.2.1") for d in datagrams])
    assert [r.error for r in batch.reports] == [None] * len(datagrams)
    expected = [parse_sip(dg.payload).method for dg in sipp_capture]
    assert batch.flows["sip_method"].tolist() == expected
    assert not (batch.flows["sip_flags"] & SipFlag.MALFORMED).any()
    assert all(len(s.header) == 128 for s in batch.samples)
