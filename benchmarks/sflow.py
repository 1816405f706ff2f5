"""sFlow decode throughput: samples/s with plain headers and with sampled SIP payloads.

usage: .venv/bin/python benchmarks/sflow.py [--samples N] [--batch DATAGRAMS] [--repeat R]

Builds realistic datagrams with the encoder (128-byte Ethernet/IPv4 headers, ~10 samples per
datagram like a switch at 1400 bytes) and times ``SflowDecoder.decode_batch`` on them.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from voxguard.ingest.decode.flows import empty_flows
from voxguard.ingest.decode.sflow import SflowDecoder
from voxguard.ingest.encode.sflow import SflowEncoder, sip_request


def make_rows(n: int, rng: random.Random) -> np.ndarray:
    f = empty_flows(n)
    f["src_lo"] = [0xFFFF_0000_0000 | rng.getrandbits(32) for _ in range(n)]
    f["dst_lo"] = 0xFFFF_CB00_710A
    f["proto"] = [rng.choice((6, 17, 17, 17)) for _ in range(n)]
    f["src_port"] = [rng.randrange(1024, 65535) for _ in range(n)]
    f["dst_port"] = [rng.choice((5060, 443, 10000, 3478)) for _ in range(n)]
    f["tcp_flags"] = 0x18
    f["bytes"] = [rng.randrange(64, 1500) for _ in range(n)]
    f["sampling"] = 1024
    return f


def bench(label: str, datagrams: list[bytes], samples: int, batch: int, repeat: int) -> None:
    dec = SflowDecoder()
    pairs = [(d, "192.0.2.1") for d in datagrams]
    batches = [pairs[i : i + batch] for i in range(0, len(pairs), batch)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            dec.decode_batch(b)
        best = min(best, time.perf_counter() - t0)
    rec = time.perf_counter()
    for b in batches:
        dec.decode_batch(b, want_records=True)
    rec = time.perf_counter() - rec
    print(
        f"{label:<28} {samples / best:>12,.0f} samples/s  {best / samples * 1e6:6.2f} us/sample"
        f"   (records: {samples / rec:,.0f} samples/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=64, help="datagrams per decode_batch call")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(1)
    rows = make_rows(a.samples, rng)
    plain = SflowEncoder("192.0.2.1").flow_datagrams(rows)
    uas = ["Linphone/5.2", "friendly-scanner", "Asterisk PBX 18"]
    methods = ["INVITE", "REGISTER", "OPTIONS"]
    payloads: list[bytes | None] = []
    for r in rows:
        if r["dst_port"] == 5060 and r["proto"] == 17:
            payloads.append(sip_request(rng.choice(methods), user_agent=rng.choice(uas)))
        else:
            payloads.append(None)
    sip_rows = rows.copy()
    with_sip = SflowEncoder("192.0.2.1").flow_datagrams(sip_rows, payloads)
    n_sip = sum(p is not None for p in payloads)
    print(f"{a.samples} samples, {len(plain)} datagrams, batches of {a.batch} datagrams")
    bench("headers only", plain, a.samples, a.batch, a.repeat)
    bench(f"with SIP ({n_sip / a.samples:.0%} SIP)", with_sip, a.samples, a.batch, a.repeat)
    all_sip = np.array(rows)
    all_sip["proto"], all_sip["dst_port"] = 17, 5060
    every = SflowEncoder("192.0.2.1").flow_datagrams(all_sip, [sip_request("INVITE")] * a.samples)
    bench("every sample SIP", every, a.samples, a.batch, a.repeat)


if __name__ == "__main__":
    main()
