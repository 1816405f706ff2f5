"""Packed traffic batches (``format: "packed"``): the same records as JSON-list columns, and every
malformed packed column refused with a clear error, never another exception."""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from voxguard.shared import batchcodec
from voxguard.shared.batches import BatchError, decode_batch, encode_batches, ticks_to_batch, ticks_to_columns
from voxguard.shared.messages import TrafficTick

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def tick(i: int, **kw: Any) -> dict[str, Any]:
    host = f"10.1.{i // 250}.{i % 250}"
    d = {
        "schema_version": 1, "id": f"t{i}", "ts": T0.isoformat(), "tier": "media", "target_id": f"media-h{i:06d}",
        "target": f"media-gw-eu host {host}", "component": "media-gw-eu", "host": host, "protocol": "udp",
        "ports": "10000-20000", "role": "media", "region": "eu-west", "tick_start": T0.isoformat(),
        "tick_seconds": 1.0, "exporters": ["edge-media-01"] if i % 3 else ["edge-a", "edge-b"],
        "bytes": 172 * (50 + i) + 2**40 * (i == 4), "packets": 50 + i, "flows": 1 + i % 7, "new_connections": i % 2,
        "icmp_packets": 0, "long_lived_flows": 2, "distinct_sources": 3, "bytes_per_packet": 172.25,
        "size_histogram": [1, 49 + i, 0, 0, 0, 0],
        "top_sources": [{"source": f"192.0.2.{i % 200 + 1}", "packets": 40, "bytes": 6880}],
        "top_prefixes": [{"source": "192.0.2.0/24", "packets": 50, "bytes": 8600}],
        "sip_methods": {"INVITE": 3, "BYE": 1} if i % 10 == 3 else {}, "sip_scanner_packets": 0,
        "sip_malformed_packets": 0, "sip_sampled_packets": 1 if i % 10 == 3 else 0, "flow_records": 3,
        "sampled": bool(i % 2),
    }  # fmt: skip
    d.update(kw)
    return d


def packed(ticks: list[dict[str, Any]]) -> dict[str, Any]:
    return ticks_to_batch(ticks, packed=True)


def test_packed_and_list_columns_decode_to_the_same_records() -> None:
    ticks = [tick(i) for i in range(60)]
    ticks[5] = tick(5, host=None, ports=None, region=None, target_id="media-gw-eu-rtp")  # a component row
    ticks[6] = tick(6, target="name with a\nnewline")  # text that cannot be a line: a dictionary column
    doc = packed(ticks)
    assert doc["format"] == "packed"
    assert doc["columns"]["target_id"].keys() == {"lines"}
    assert doc["columns"]["component"].keys() == {"values", "codes"}
    assert doc["columns"]["target"].keys() == {"values", "codes"}
    assert doc["columns"]["packets"]["dtype"] == "u1" and doc["columns"]["bytes"]["dtype"] == "u8"
    assert doc["columns"]["size_histogram"]["shape"] == [60, 6]
    assert len(doc["columns"]["sip_methods"]["sparse"]) == 6
    a, b = decode_batch(orjson.dumps(ticks_to_batch(ticks))), decode_batch(orjson.dumps(doc))
    assert a.n == b.n == 60 and b.dropped == 0
    for i in range(60):
        want = TrafficTick.model_validate(ticks[i]).model_dump(exclude={"id", "ts"})
        assert a.tick(i).model_dump(exclude={"id", "ts"}) == want
        assert b.tick(i).model_dump(exclude={"id", "ts"}) == want
        assert b.meta(i) == a.meta(i)
    for k in a.num:
        assert np.array_equal(a.num[k], b.num[k]), k


def test_encode_batches_splits_columns_under_the_limit_and_keeps_every_record() -> None:
    n = 5_000
    cols: dict[str, Any] = ticks_to_columns([tick(i) for i in range(n)])
    cols["packets"] = np.arange(n, dtype=np.int64)  # arrays and lists mix
    limit = 64 * 1024
    out = encode_batches("media", T0.isoformat(), 1.0, cols, n, max_bytes=limit)
    assert len(out) > 3 and all(len(d) <= limit for d, _ in out)
    assert len({m for _, m in out}) == len(out)
    decoded = [decode_batch(d) for d, _ in out]
    assert [t for c in decoded for t in c.ids] == cols["target_id"]
    assert np.concatenate([c.num["packets"] for c in decoded]).tolist() == list(range(n))


def b64(arr: np.ndarray) -> str:
    return base64.b64encode(arr.tobytes()).decode()


def _set(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(doc: dict[str, Any]) -> None:
        doc["columns"][name] = value

    return f


def _edit(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def f(doc: dict[str, Any]) -> None:
        doc["columns"][name][key] = value

    return f


@pytest.mark.parametrize(
    "mangle, message",
    [
        (_edit("packets", "dtype", "i8"), "'packets': dtype must be"),
        (_edit("packets", "dtype", "U8"), "dtype must be"),
        (_edit("packets", "shape", [4]), r"shape \[4\] does not fit 5"),
        (_edit("packets", "shape", [5, 2]), "does not fit"),
        (_edit("packets", "shape", "5"), "shape must be"),
        (_edit("packets", "b64", "***"), "not valid base64"),
        (_edit("packets", "b64", b64(np.arange(4, dtype=np.uint8))), "holds 4 bytes"),
        (_edit("packets", "b64", 5), "b64 must be a string"),
        (_edit("size_histogram", "shape", [5]), "does not fit"),
        (_edit("size_histogram", "shape", [5, 10_000]), "does not fit"),
        (_set("target_id", {"lines": "a\nb"}), "lines holds 2 values for 5"),
        (_set("target_id", {"lines": 7}), "lines must be a string"),
        (_set("component", {"values": [], "codes": batchcodec.pack_array(np.zeros(5, np.int64))}), "non-empty"),
        (_set("component", {"values": ["x"], "codes": batchcodec.pack_array(np.arange(5))}), "index values"),
        (
            _set("component", {"values": ["x"], "codes": {"dtype": "f8", "shape": [5], "b64": b64(np.zeros(5))}}),
            "unsigned",
        ),
        (_set("sip_methods", {"sparse": {"9": {"INVITE": 1}}}), "not a record index"),
        (_set("sip_methods", {"sparse": {"-1": {"INVITE": 1}}}), "not a record index"),
        (_set("sip_methods", {"sparse": [1]}), "sparse must be an object"),
        (_set("exporters", {"what": 1}), "needs dtype/b64"),
        (_set("flows", "7"), "is not a list"),
    ],
)
def test_broken_packed_columns_are_rejected_with_a_clear_error(
    mangle: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = packed([tick(i) for i in range(5)])
    decode_batch(orjson.dumps(doc))
    mangle(doc)
    with pytest.raises(BatchError, match=message):
        decode_batch(orjson.dumps(doc))


def test_a_packed_column_in_a_list_format_batch_is_refused() -> None:
    doc = ticks_to_batch([tick(i) for i in range(3)])
    doc["columns"]["packets"] = batchcodec.pack_array(np.ones(3, np.int64))
    with pytest.raises(BatchError, match="'packets' is not a list"):
        decode_batch(orjson.dumps(doc))


def test_bad_packed_values_drop_their_records_only() -> None:
    doc = packed([tick(i) for i in range(6)])
    c = doc["columns"]
    bpp = np.full(6, 172.0)
    bpp[1], bpp[2] = np.nan, -1.0
    c["bytes_per_packet"] = {"dtype": "f8", "shape": [6], "b64": b64(bpp.astype("<f8"))}
    flows = np.ones(6)
    flows[3] = 1.5  # a count that is not whole
    c["flows"] = {"dtype": "f4", "shape": [6], "b64": b64(flows.astype("<f4"))}
    c["component"] = {"values": ["media-gw-eu", None], "codes": batchcodec.pack_array(np.array([0, 0, 0, 0, 1, 0]))}
    c["sip_methods"] = {"sparse": {"5": ["INVITE"]}}
    cols = decode_batch(orjson.dumps(doc))
    assert cols.ids == ["media-h000000"]
    assert cols.bad == {"bad_number": 3, "bad_text": 1, "bad_list": 1}


def test_fuzzed_packed_batches_never_raise_anything_but_batch_error() -> None:
    """Random byte and value mutations of a good packed batch: a BatchError or a decode with
    the bad records dropped, never another exception (the consumer would crash or redeliver)."""
    rng = random.Random(4242)
    good = orjson.dumps(packed([tick(i) for i in range(20)]))
    doc0 = orjson.loads(good)
    outcomes = {"error": 0, "ok": 0}
    hostile: list[Any] = [None, -1, 2**70, 1.5, "", "x" * 5000, [], {}, [1, "a"], {"dtype": "u8"}, True]
    for k in range(1500):
        raw: bytes | dict[str, Any]
        if k % 3 == 2:  # inside a text column: the structure holds, values break
            doc = orjson.loads(good)
            name = rng.choice(["target_id", "top_sources", "top_prefixes", "host"])
            text = doc["columns"][name].get("lines", "")
            if text:
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice([" ", ";", "\n", "\x00", "9" * 30, "é", ""]) + text[at + 1 :]
                doc["columns"][name]["lines"] = text
            raw = doc
        elif k % 3 == 1:
            data = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            raw = bytes(data)
        else:
            doc = orjson.loads(good)
            name = rng.choice(sorted(doc0["columns"]))
            col = doc["columns"][name]
            if isinstance(col, dict) and col and rng.random() < 0.7:
                col[rng.choice(sorted(col))] = rng.choice(hostile)
            else:
                doc["columns"][name] = rng.choice(hostile)
            raw = doc
        try:
            cols = decode_batch(raw)
            outcomes["ok"] += 1
            for i in range(cols.n):
                cols.sources(i).top_sources  # noqa: B018  (parsed lazily: must not raise either)
        except BatchError:
            outcomes["error"] += 1
    assert outcomes["error"] > 300 and outcomes["ok"] > 200
