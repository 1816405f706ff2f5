"""Known answers and hostile input for the sampled-SIP parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxguard.ingest.decode.flows import SipFlag, SipMethod
from voxguard.ingest.decode.sip import SCANNER_FINGERPRINTS, looks_like_sip, parse_sip
from voxguard.ingest.encode.sflow import sip_request, sip_response

# RFC 3665 style INVITE with SDP (section 3.1 of the SIP basic call flows), CRLF line ends.
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    b"User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 151\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

REGISTER_COMPACT = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"t: Bob <sip:bob@biloxi.example.com>\r\n"
    b"f: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"i: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"m: <sip:bob@192.0.2.4>\r\n"
    b"Expires: 7200\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

SVMAP_OPTIONS = (  # what sipvicious svmap sends (User-Agent friendly-scanner)
    b"OPTIONS sip:100@203.0.113.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bK-2217478911;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "sipvicious"<sip:100@1.1.1.1>\r\n'
    b'From: "sipvicious"<sip:100@1.1.1.1>;tag=6434396633623535313363340131393533383031363838\r\n'
    b"User-Agent: friendly-scanner\r\n"
    b"Call-ID: 484813185384101541227474\r\n"
    b"Contact: sip:100@198.51.100.66:5060\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RESPONSE_180 = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:bob@client.biloxi.example.com;transport=tcp>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_invite_with_sdp() -> None:
    i = parse_sip(INVITE)
    assert i.error is None
    assert (i.method, i.status) == (SipMethod.INVITE, None)
    assert i.flags == SipFlag.SDP | SipFlag.CALL_ID
    assert i.request_uri == b"sip:bob@biloxi.example.com"
    assert i.user_agent == b"Linphone/5.2.0 (belle-sip/5.2.0)"
    assert i.from_ == b'"Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl'
    assert i.to == b"Bob <sip:bob@biloxi.example.com>"
    assert i.call_id == b"3848276298220188511@atlanta.example.com"
    assert i.cseq == b"1 INVITE"
    assert i.content_length == 151 == len(INVITE.split(b"\r\n\r\n", 1)[1])
    d = i.as_dict()
    assert d["method"] == "INVITE" and d["sdp"] and not d["scanner"] and not d["malformed"]


def test_register_with_compact_headers() -> None:
    i = parse_sip(REGISTER_COMPACT)
    assert i.error is None
    assert i.method == SipMethod.REGISTER
    assert i.flags == SipFlag.CALL_ID
    assert i.call_id == b"843817637684230@998sdasdh09"
    assert i.from_ == b"Bob <sip:bob@biloxi.example.com>;tag=456248"
    assert i.to == b"Bob <sip:bob@biloxi.example.com>"
    assert i.via == b"SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7"
    assert i.contact == b"<sip:bob@192.0.2.4>"
    assert i.content_length == 0


def test_options_from_sipvicious_is_a_scanner() -> None:
    i = parse_sip(SVMAP_OPTIONS)
    assert i.error is None
    assert i.method == SipMethod.OPTIONS
    assert i.flags == SipFlag.SCANNER_UA | SipFlag.CALL_ID  # Accept: application/sdp is not an SDP body


def test_responses() -> None:
    i = parse_sip(RESPONSE_180)
    assert (i.method, i.status, i.error) == (SipMethod.RESPONSE, 180, None)
    assert i.as_dict()["method"] == "RESPONSE" and i.as_dict()["statusCode"] == 180
    for code in (100, 200, 401, 486, 503, 699):
        r = parse_sip(sip_response(code, "Whatever"))
        assert (r.method, r.status, r.error) == (SipMethod.RESPONSE, code, None)
    assert parse_sip(RESPONSE_180.replace(b"180", b"099", 1)).flags & SipFlag.MALFORMED
    assert parse_sip(RESPONSE_180.replace(b"180", b"1800", 1)).flags & SipFlag.MALFORMED


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("INVITE", 1),
        ("REGISTER", 2),
        ("OPTIONS", 3),
        ("BYE", 4),
        ("ACK", 5),
        ("CANCEL", 6),
        ("SUBSCRIBE", 7),
        ("NOTIFY", 7),
        ("X-CUSTOM", 7),
    ],
)
def test_methods(method: str, code: int) -> None:
    i = parse_sip(sip_request(method))
    assert (i.method, i.error) == (code, None)
    if code == SipMethod.OTHER_REQUEST:
        assert i.as_dict()["method"] == method


@pytest.mark.parametrize(
    "ua",
    [
        *SCANNER_FINGERPRINTS,
        "SIPVicious 0.3.4",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "Gulp/1.0",
        "sipsak 0.9.6",
        "iWar",
        "SIVuS",
        "sundayddr",
        "pplsip",
        "sip-scan",
    ],
)
def test_scanner_user_agents(ua: str) -> None:
    i = parse_sip(sip_request("REGISTER", user_agent=ua))
    assert i.error is None
    assert i.flags & SipFlag.SCANNER_UA


@pytest.mark.parametrize("ua", ["Asterisk PBX 18.2.0", "Linphone/5.0", "Zoiper rv2.10", "FreeSWITCH-mod_sofia/1.10"])
def test_ordinary_user_agents(ua: str) -> None:
    assert not parse_sip(sip_request("INVITE", user_agent=ua)).flags & SipFlag.SCANNER_UA


def test_sdp_detected_from_body_or_multipart() -> None:
    no_type = INVITE.replace(b"Content-Type: application/sdp\r\n", b"")
    assert parse_sip(no_type).flags & SipFlag.SDP  # body starts with v=0
    multipart = (
        INVITE.split(b"\r\n\r\n")[0].replace(b"application/sdp", b"multipart/mixed;boundary=xx")
        + b"\r\n\r\n--xx\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--xx--\r\n"
    ).replace(b"Content-Length: 151", b"Content-Length: 55")
    assert parse_sip(multipart).flags & SipFlag.SDP
    assert not parse_sip(REGISTER_COMPACT).flags & SipFlag.SDP


@pytest.mark.parametrize("msg", [INVITE, REGISTER_COMPACT, SVMAP_OPTIONS, RESPONSE_180])
def test_truncated_prefixes_are_not_malformed(msg: bytes) -> None:
    """An sFlow header cuts the message anywhere: a well-started message is never malformed."""
    whole = parse_sip(msg)
    for k in range(1, len(msg) + 1):
        i = parse_sip(msg[:k], truncated=True)
        assert i.error is None, (k, msg[:k], i.error)
        if k >= msg.index(b" ") + 1:
            assert i.method == whole.method, k


@pytest.mark.parametrize("msg", [INVITE, REGISTER_COMPACT, SVMAP_OPTIONS, RESPONSE_180])
def test_untruncated_prefixes_are_malformed(msg: bytes) -> None:
    """The same cut without the truncation flag is a broken message (no blank line, short body)."""
    for k in range(1, len(msg)):
        assert parse_sip(msg[:k]).flags & SipFlag.MALFORMED, (k, msg[:k])


def test_what_a_128_byte_sflow_sample_keeps() -> None:
    """Ethernet + IPv4 + UDP take 42 of 128 bytes: 86 bytes of the INVITE remain."""
    i = parse_sip(INVITE[:86], truncated=True)
    assert (i.method, i.flags, i.error) == (SipMethod.INVITE, 0, None)
    assert i.request_uri == b"sip:bob@biloxi.example.com"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\x03garbage", "non-printable"),
        (b"INVITE sip:bob@example.com SIP/2.0", "no CRLF"),
        (b"HELLO WORLD\r\n\r\n", "bad start line"),
        (b"INVITE sip:bob@example.com HTTP/1.1\r\nVia: x\r\n\r\n", "bad start line"),
        (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "bad start line"),
        (b"INVITE  sip:bob@example.com SIP/2.0\r\n\r\n", "bad start line"),
        (b"INVITE sip:bob@example.com SIP/2.0\nVia: x\n\n", "bare LF"),
        (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: x\nTo: y\r\n\r\n", "bare CR or LF"),
        (b"INVITE bob SIP/2.0\r\nVia: x\r\n\r\n", "bad start line"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "no colon"),
        (INVITE.replace(b"Max-Forwards", b"Max Forwards"), "bad header name"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: " + b"7" * 5000), "bytes"),
        (INVITE.replace(b"Content-Length: 151", b"Content-Length: abc"), "not a number"),
        (INVITE.replace(b"Content-Length: 151", b"Content-Length: 99999999"), "absurd Content-Length"),
        (INVITE.replace(b"Content-Length: 151", b"Content-Length: 500"), "shorter than Content-Length"),
        (INVITE.replace(b"Call-ID: 3848276298220188511@atlanta.example.com\r\n", b""), "missing mandatory"),
        (INVITE.replace(b"User-Agent: Linphone", b"User-Agent: Lin\x01phone"), "non-printable"),
        (b"INVITE sip:a@b SIP/2.0\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", "header lines"),
    ],
)
def test_malformed(payload: bytes, why: str) -> None:
    i = parse_sip(payload)
    assert i.flags & SipFlag.MALFORMED
    assert i.error is not None and why in i.error, i.error


def test_truncation_does_not_excuse_garbage() -> None:
    assert parse_sip(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", truncated=True).flags & SipFlag.MALFORMED
    assert parse_sip(b"HELLO WORLD ", truncated=True).flags & SipFlag.MALFORMED
    assert parse_sip(INVITE[:60].replace(b"INVITE", b"INV\x00TE"), truncated=True).flags & SipFlag.MALFORMED


def test_keepalives_are_neither_sip_nor_malformed() -> None:
    for ka in (b"\r\n\r\n", b"\r\n"):
        i = parse_sip(ka)
        assert (i.method, i.flags) == (0, 0)
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x01" * 12
    assert parse_sip(stun).flags == 0


def test_tcp_stream_continuation_is_not_malformed() -> None:
    body = INVITE.split(b"\r\n\r\n", 1)[1]
    assert parse_sip(body, stream=True).flags == 0
    assert parse_sip(body, stream=False).flags & SipFlag.MALFORMED
    assert parse_sip(INVITE[:300], stream=True).error is None  # a message split over segments
    assert parse_sip(b"\x00\x01binary", stream=True).flags & SipFlag.MALFORMED


def test_looks_like_sip() -> None:
    assert looks_like_sip(INVITE) and looks_like_sip(RESPONSE_180) and looks_like_sip(b"MESSAGE sip:a")
    assert not looks_like_sip(b"GET / HTTP/1.1\r\n") and not looks_like_sip(b"\x80\x00") and not looks_like_sip(b"")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000), st.booleans(), st.booleans())
def test_never_raises_on_random_bytes(data: bytes, truncated: bool, stream: bool) -> None:
    i = parse_sip(data, truncated=truncated, stream=stream)
    assert isinstance(i.flags, int) and 0 <= i.flags < 16
    assert (i.error is None) == (not i.flags & SipFlag.MALFORMED)
    i.as_dict()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_never_raises_on_mutated_messages(data: st.DataObject) -> None:
    msg = bytearray(data.draw(st.sampled_from([INVITE, REGISTER_COMPACT, SVMAP_OPTIONS, RESPONSE_180])))
    for _ in range(data.draw(st.integers(1, 10))):
        op = data.draw(st.integers(0, 2))
        pos = data.draw(st.integers(0, len(msg) - 1))
        if op == 0:
            msg[pos] = data.draw(st.integers(0, 255))
        elif op == 1:
            del msg[pos]
        else:
            msg[pos:pos] = data.draw(st.sampled_from([b"\r\n", b":", b" ", b"\r\n\r\n", b"\x00", b"\xff" * 9000]))
    i = parse_sip(bytes(msg), truncated=data.draw(st.booleans()))
    assert (i.error is None) == (not i.flags & SipFlag.MALFORMED)
    i.as_dict()
