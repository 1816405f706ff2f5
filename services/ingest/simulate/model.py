"""The VoIP platform traffic model: per-second flows and per-target totals from one source of truth.

Everything is a pure function of (config, params, seed, absolute time):

* activity curves (diurnal, weekly, Monday-morning ramp) times smooth multiplicative noise
  (AR(1) on minute and 10-second knots, hashed from the absolute knot index, so a curve does
  not depend on where a query starts);
* "sessions" drawn per aligned hour block from a generator keyed by (seed, stream, block):
  a SIP transaction is a one-second session, an RTP stream, a TLS or WebSocket connection or a
  TURN allocation a long one with per-second packet counts (first second, every ``period``
  seconds in the middle, last second);
* the per-second flow rows (``TrafficModel.second``) and the totals fast path
  (``TrafficModel.totals``) both read the same session tables, so they agree exactly on packets,
  bytes, new flows, SYNs and SIP methods; totals never materialise per-second rows.

Source identities (address, ports) are hashed from a session id, so the flows of one call (its
INVITE, its RTP legs, its BYE) come from the same endpoint without storing anything per flow.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from voxguard.ingest.decode.flows import FLOW_DTYPE, SipFlag, SipMethod, addr_to_halves, v4_to_lo
from voxguard.shared.config import IPNetwork, Protocol, TargetDef, Tier, VoxGuardConfig
from voxguard.shared.messages import TrafficTick

__all__ = [
    "BLOCK",
    "ModelParams",
    "Population",
    "SecondFlows",
    "TargetTotals",
    "Totals",
    "TrafficModel",
]

BLOCK = 3600  # seconds per generated session block (aligned to the epoch)
SIZE_BUCKETS = np.array(TrafficTick.SIZE_BUCKETS, dtype=np.float64)
N_SIZE = len(SIZE_BUCKETS) + 1
N_SIP = max(SipMethod.NAMES) + 1
UDP, TCP, ICMP = 17, 6, 1
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
LONG_LIVED_S = 60  # a router's active timeout: flows older than this are re-exported
_V6_SRC_HI = np.uint64(0x2001_0DB8_0000_0000)  # IPv4 sources mapped into v6 space for v6 targets

# ---------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class ModelParams:
    """Platform size and behaviour at ``scale`` 1 (a mid-size operator); rates scale linearly."""

    scale: float = 1.0
    endpoints: int = 20_000  # registered SIP endpoints (all SBCs)
    endpoint_ips: int = 12_000  # public addresses behind which they sit (NAT shares addresses)
    endpoint_prefixes: int = 1_500  # /24s those addresses come from
    register_interval_s: float = 300.0  # REGISTER refresh period
    ep_options_per_s: float = 20.0  # NAT keep-alive OPTIONS from endpoints, all SBCs
    trunk_ips: int = 12  # carrier interconnect addresses
    trunk_options_interval_s: float = 10.0
    peak_cps: float = 10.0  # new calls per second at a weekday peak, all SBCs
    answer_ratio: float = 0.65
    talk_median_s: float = 90.0
    talk_sigma: float = 0.9  # lognormal sigma of the talk time
    max_call_s: int = 3_600
    trunk_originated: float = 0.45  # share of calls coming in from carriers
    tls_connections: float = 1_500.0  # concurrent SIP-over-TLS connections at full presence
    tls_mean_s: float = 900.0
    icmp_pingers: int = 4
    icmp_unreach_per_s: float = 40.0  # port unreachables from endpoints whose NAT binding expired
    api_clients: int = 600
    api_prefixes: int = 200
    api_peak_cps: float = 25.0  # new HTTPS connections to 443 at peak
    rest_8443_cps: float = 5.0
    websockets: float = 400.0  # concurrent WebSocket connections on 8443 at peak
    websocket_mean_s: float = 1_800.0
    turn_share: float = 0.10  # answered calls relayed through TURN
    turn_tls_share: float = 0.15  # of those, over TLS/5349
    stun_per_s: float = 8.0
    generic_per_s: float = 5.0  # light traffic for monitors no stream models
    utc_offsets: tuple[tuple[str, float], ...] = (
        ("eu-west", 1.0),
        ("eu-central", 1.0),
        ("eu-east", 2.0),
        ("us-east", -5.0),
        ("us-central", -6.0),
        ("us-west", -8.0),
        ("ap-southeast", 8.0),
        ("ap-northeast", 9.0),
    )

    def offset_s(self, region: str | None) -> int:
        """Seconds to add to UTC for a region's local time (0 when unknown)."""
        return int(dict(self.utc_offsets).get(region or "", 0.0) * 3600)


# ---------------------------------------------------------------------------------------------
# counter-based randomness: values depend on (salt, key) only, never on query order

_MASK = (1 << 64) - 1
_G = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix_int(x: int) -> int:
    z = (x + _G) & _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def salt_of(*parts: object) -> int:
    """A 64-bit salt from any mix of ints and strings (stable across runs and platforms)."""
    h = 0x5EED
    for p in parts:
        v = p if isinstance(p, int) else zlib.crc32(str(p).encode())
        h = _mix_int(h ^ (v & _MASK))
    return h


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised: a good 64-bit hash of each value."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(_G)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return np.asarray(z ^ (z >> np.uint64(31)))


def u01(keys: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0, 1) per key."""
    h = mix64(np.asarray(keys, dtype=np.uint64) ^ np.uint64(salt & _MASK))
    return np.asarray((h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)))


def _normal(keys: np.ndarray, salt: int) -> np.ndarray:
    a = np.maximum(u01(keys, salt), 1e-300)
    b = u01(keys, salt ^ 0x5A5A5A5A)
    return np.asarray(np.sqrt(-2.0 * np.log(a)) * np.cos(2.0 * np.pi * b))


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([k & _MASK for k in keys]))


# ---------------------------------------------------------------------------------------------
# activity curves

_WD = np.array(
    [(0, .09), (4, .05), (6, .10), (7, .28), (8, .68), (9, .93), (10, 1.0), (11, .98), (12, .84),
     (13, .82), (14, .95), (15, .97), (16, .90), (17, .72), (18, .48), (19, .34), (20, .27),
     (21, .21), (22, .15), (23, .11), (24, .09)]
)  # fmt: skip
_WE = np.array(
    [(0, .09), (4, .05), (7, .07), (9, .16), (11, .30), (13, .32), (16, .30), (18, .25), (20, .20),
     (22, .13), (24, .09)]
)  # fmt: skip


def weekly_shape(t_local: np.ndarray) -> np.ndarray:
    """Business-VoIP load in [~0.05, ~1.2] at local epoch seconds: weekdays 09-18, quiet weekends."""
    t = np.asarray(t_local, dtype=np.int64)
    day = np.floor_divide(t, 86_400)
    wd = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    h = (t - day * 86_400) / 3600.0
    out = np.where(wd >= 5, np.interp(h, _WE[:, 0], _WE[:, 1]), np.interp(h, _WD[:, 0], _WD[:, 1]))
    # Monday morning: desk phones and laptops come back at once, the week's backlog of calls
    out = out * np.where(wd == 0, 1.0 + 0.22 * np.exp(-(((h - 9.5) / 1.6) ** 2)), 1.0)
    # Friday afternoon winds down early
    out = out * np.where(wd == 4, 1.0 - 0.15 * np.exp(-(((h - 16.0) / 2.5) ** 2)), 1.0)
    return np.asarray(out)


def _ar_series(salt: int, t: np.ndarray, step: int, phi: float, lags: int) -> np.ndarray:
    """Unit-variance AR(1) on knots every ``step`` s (truncated MA form), linearly interpolated."""
    k = np.floor_divide(t, step)
    frac = (t - k * step) / step
    k0, k1 = int(k.min()), int(k.max()) + 1
    ks = np.arange(k0 - lags, k1 + 1, dtype=np.int64)
    eps = _normal(ks.astype(np.uint64), salt)
    kern = phi ** np.arange(lags + 1)
    kern /= np.sqrt((kern**2).sum())
    vals = np.convolve(eps, kern, mode="valid")
    i = k - k0
    return np.asarray(vals[i] * (1.0 - frac) + vals[i + 1] * frac)


_ACTIVITY_CACHE: OrderedDict[tuple[Activity, tuple[int, int, int]], np.ndarray] = OrderedDict()


@dataclass(frozen=True)
class Activity:
    """``(base + amp * weekly_shape) * exp(noise)`` at absolute seconds, in one region's local time."""

    salt: int
    offset_s: int
    base: float = 0.0
    amp: float = 1.0
    slow: float = 0.08  # sigma of the minute-scale AR(1) (phi 0.97 per minute)
    fast: float = 0.04  # sigma of the 10-second AR(1) (phi 0.7)
    daily: float = 0.05  # sigma of a per-local-day level

    def __call__(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        if len(t) == 0:
            return np.zeros(0)
        key = (int(t[0]), int(t[-1]), len(t))
        hit = _ACTIVITY_CACHE.get((self, key))
        if hit is None:
            hit = self._compute(t)
            _ACTIVITY_CACHE[(self, key)] = hit
            while len(_ACTIVITY_CACHE) > 256:
                _ACTIVITY_CACHE.popitem(last=False)
        return hit

    def _compute(self, t: np.ndarray) -> np.ndarray:
        tl = t + self.offset_s
        noise = np.zeros(len(t))
        if self.slow:
            noise += self.slow * _ar_series(self.salt ^ 1, t, 60, 0.97, 150)
        if self.fast:
            noise += self.fast * _ar_series(self.salt ^ 2, t, 10, 0.7, 15)
        if self.daily:
            day = np.floor_divide(tl, 86_400).astype(np.uint64)
            noise += self.daily * _normal(day, self.salt ^ 3)
        return np.asarray((self.base + self.amp * weekly_shape(tl)) * np.exp(noise))


# ---------------------------------------------------------------------------------------------
# address populations

_RESERVED = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
              "198.51.100.0/24", "203.0.113.0/24")
]  # fmt: skip


class AddressAllocator:
    """Hands out distinct, plausible public /24s so that populations never overlap each other
    nor the platform's own prefixes (deterministic in the order of the requests)."""

    def __init__(self, seed: int, exclude: Sequence[IPNetwork] = ()):
        self._rng = _rng(salt_of(seed, "alloc"))
        self._used: set[int] = set()
        self._exclude = [n for n in [*_RESERVED, *exclude] if n.version == 4]

    def _ok(self, p24: int) -> bool:
        if p24 in self._used:
            return False
        net = ipaddress.IPv4Network((p24 << 8, 24))
        return not any(net.overlaps(x) for x in self._exclude)

    def prefixes(self, n: int) -> np.ndarray:
        """``n`` new /24 base addresses (uint32)."""
        out: list[int] = []
        while len(out) < n:
            for p in self._rng.integers(1 << 16, 224 << 16, size=max(16, 2 * (n - len(out)))).tolist():
                if len(out) < n and self._ok(p):
                    self._used.add(p)
                    out.append(p)
        return np.array(out, dtype=np.uint32) << np.uint32(8)


class Population:
    """Source addresses with activity weights; ``spoofed`` draws a fresh random address per flow."""

    def __init__(self, name: str, ips: np.ndarray, weights: np.ndarray | None = None, *, spoofed: bool = False):
        self.name = name
        self.spoofed = spoofed
        self.ips = np.asarray(ips, dtype=np.uint32)
        if not spoofed and len(self.ips) == 0:
            raise ValueError(f"population {name} is empty")
        w = np.ones(len(self.ips)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum() if len(w) else w
        self._cdf = np.cumsum(self.weights)
        if len(self._cdf):
            self._cdf[-1] = 1.0
        if spoofed:
            self._grid = np.array([0.0, 1e12])
            self._dist = self._grid.copy()
        else:
            self._grid = np.unique(np.r_[0.0, np.geomspace(0.5, 40.0 * len(self.ips) + 10, 200)])
            d = np.zeros(len(self._grid))
            for i in range(0, len(self.weights), 4096):
                w_ = self.weights[i : i + 4096]
                d += (1.0 - np.exp(-np.outer(self._grid, w_))).sum(axis=1)
            self._dist = d

    def __len__(self) -> int:
        return len(self.ips)

    def pick(self, u: np.ndarray) -> np.ndarray:
        """Addresses (uint32) for uniforms ``u`` in [0, 1)."""
        if self.spoofed:
            return spoofed_addresses(u)
        ix = np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self.ips) - 1)
        return np.asarray(self.ips[ix])

    def distinct(self, n: np.ndarray) -> np.ndarray:
        """Expected distinct sources among ``n`` independent weighted draws."""
        return np.asarray(np.interp(n, self._grid, self._dist))

    def prefixes(self) -> list[str]:
        """The /24s of the population (empty for spoofed ones: every flow has its own)."""
        if self.spoofed:
            return []
        return [f"{ipaddress.IPv4Address(int(p))}/24" for p in np.unique(self.ips & np.uint32(0xFFFFFF00))]

    def addresses(self) -> list[str]:
        """The addresses as text."""
        return [str(ipaddress.IPv4Address(int(a))) for a in self.ips]

    @classmethod
    def build(
        cls,
        name: str,
        alloc: AddressAllocator,
        rng: np.random.Generator,
        n_prefixes: int,
        n_ips: int,
        sigma: float,
    ) -> Population:
        """``n_ips`` addresses spread over ``n_prefixes`` fresh /24s, lognormal activity weights."""
        n_prefixes = max(1, n_prefixes)
        n_ips = max(n_prefixes, n_ips)
        bases = alloc.prefixes(n_prefixes)
        which = np.r_[np.arange(n_prefixes), rng.integers(0, n_prefixes, n_ips - n_prefixes)]
        host = rng.integers(1, 255, n_ips).astype(np.uint32)
        ips = np.unique(bases[which] | host)
        return cls(name, ips, rng.lognormal(0.0, sigma, len(ips)) if sigma else None)


def spoofed_addresses(u: np.ndarray) -> np.ndarray:
    """Uniform public-looking IPv4 addresses (first octet 1-223, common private blocks avoided)."""
    a = (np.asarray(u) * float(223 << 24)).astype(np.uint64) + np.uint64(1 << 24)
    first = a >> np.uint64(24)
    bad = (first == 10) | (first == 127) | (first == 100) | (first == 172) | (first == 192) | (first == 169)
    a = np.where(bad, a + np.uint64(3 << 24), a)
    return np.asarray(a.astype(np.uint32))


@dataclass(frozen=True, eq=False)
class HostSet:
    """The addresses of one component, as flow columns, with their share of the load."""

    addrs: tuple[str, ...]
    hi: np.ndarray
    lo: np.ndarray
    v6: np.ndarray
    cdf: np.ndarray

    @classmethod
    def of(cls, networks: Sequence[IPNetwork], rng: np.random.Generator, cap: int = 64) -> HostSet:
        """Usable hosts of the prefixes (at most ``cap``), with mildly uneven load."""
        addrs: list[str] = []
        for net in networks:
            if net.num_addresses == 1:
                addrs.append(str(net.network_address))
            else:
                for i, h in enumerate(net.hosts()):
                    if i >= cap:
                        break
                    addrs.append(str(h))
        addrs = addrs[:cap] or [str(networks[0].network_address)]
        halves = [addr_to_halves(a) for a in addrs]
        w = rng.lognormal(0.0, 0.3, len(addrs))
        cdf = np.cumsum(w / w.sum())
        cdf[-1] = 1.0
        return cls(
            tuple(addrs),
            np.array([h for h, _ in halves], dtype=np.uint64),
            np.array([lo for _, lo in halves], dtype=np.uint64),
            np.array([ipaddress.ip_address(a).version == 6 for a in addrs]),
            cdf,
        )

    def __len__(self) -> int:
        return len(self.addrs)

    def pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Host indexes for ``n`` sessions."""
        if len(self.addrs) == 1:
            return np.zeros(n, dtype=np.int64)
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.addrs) - 1)


# ---------------------------------------------------------------------------------------------
# kinds of flows and their session tables


@dataclass(eq=False)
class Kind:
    """A family of flows with one shape, all to one target: what each looks like on the wire."""

    name: str
    target: int  # index into TrafficModel.targets
    hosts: HostSet
    proto: int
    pop: Population
    party: int  # identity salt of the source; the kinds of one call party share it
    dst_ports: tuple[int, int] = (0, 0)
    src_ports: tuple[int, int] = (1024, 65535)
    period: int = 1  # a long flow sends in its middle seconds every ``period`` s (divides 60)
    max_dur: int = 1
    persistent: bool = False  # one long-standing 5-tuple (SBC->registrar): rows merge, never new
    even_ports: bool = False  # RTP ports are even
    stable_src_port: bool = False  # the source port follows the address (a NAT binding)
    icmp: tuple[int, int] = (0, 0)
    tcp_end: int = FIN | ACK  # flags of a TCP flow's last second
    index: int = -1  # position in TrafficModel.kinds, set when registered


@dataclass
class Table:
    """Sessions of one kind, sorted by start: packets/bytes in the first, middle and last second."""

    start: np.ndarray  # int64 epoch seconds
    dur: np.ndarray  # int64 seconds (>= 1)
    p0: np.ndarray  # first second
    b0: np.ndarray
    pm: np.ndarray  # each middle second that sends (every kind.period s)
    bm: np.ndarray
    pe: np.ndarray  # last second (dur >= 2)
    be: np.ndarray
    method: np.ndarray  # uint8 SipMethod of one-second SIP flows
    flags: np.ndarray  # uint8 SipFlag bits
    host: np.ndarray  # int64 index into kind.hosts
    uid: np.ndarray  # uint64 identity key

    def __len__(self) -> int:
        return len(self.start)

    def take(self, ix: np.ndarray | slice) -> Table:
        """Rows ``ix`` (a mask or indexes)."""
        return Table(**{f.name: getattr(self, f.name)[ix] for f in fields(self)})

    def sorted(self) -> Table:
        """Rows ordered by start (stable)."""
        order = np.argsort(self.start, kind="stable")
        return self.take(order)


def make_table(
    start: np.ndarray,
    *,
    p0: np.ndarray | int,
    b0: np.ndarray | int,
    dur: np.ndarray | int = 1,
    pm: np.ndarray | int = 0,
    bm: np.ndarray | int = 0,
    pe: np.ndarray | int | None = None,
    be: np.ndarray | int | None = None,
    method: np.ndarray | int = 0,
    flags: np.ndarray | int = 0,
    host: np.ndarray | int = 0,
    uid: np.ndarray | None = None,
) -> Table:
    """A table with scalars broadcast; ``pe``/``be`` default to the middle rate."""
    n = len(start)

    def col(v: np.ndarray | int, dtype: type | str) -> np.ndarray:
        if isinstance(v, np.ndarray) and v.shape == (n,):
            return v.astype(dtype, copy=False)
        return np.full(n, v, dtype=dtype)

    return Table(
        start=np.asarray(start, dtype=np.int64),
        dur=np.maximum(col(dur, np.int64), 1),
        p0=col(p0, np.int64),
        b0=col(b0, np.int64),
        pm=col(pm, np.int64),
        bm=col(bm, np.int64),
        pe=col(pm if pe is None else pe, np.int64),
        be=col(bm if be is None else be, np.int64),
        method=col(method, np.uint8),
        flags=col(flags, np.uint8),
        host=col(host, np.int64),
        uid=np.zeros(n, dtype=np.uint64) if uid is None else np.asarray(uid, dtype=np.uint64),
    )


Rate = Callable[[np.ndarray], np.ndarray]
Shape = Callable[[np.random.Generator, np.ndarray], Table]


@dataclass(eq=False)
class Mirror:
    """The same sessions seen again elsewhere, e.g. SIP the SBC forwards to the registrar."""

    kind: Kind
    share: tuple[float, float] = (0.0, 1.0)  # slice of the sessions (by hash) that take this path
    extra_bytes: int = 0  # per packet (Via / Record-Route headers the SBC adds)


@dataclass(eq=False)
class RowSpec:
    """Sessions of one kind arriving as a Poisson process of rate ``rate(t)``, shaped by ``shape``."""

    kind: Kind
    rate: Rate
    shape: Shape
    mirrors: tuple[Mirror, ...] = ()
    poisson: bool = True  # False: exactly the integrated rate (a botnet of known size)


class Stream:
    """Something that produces session tables per hour block."""

    name: str = "stream"
    kinds: list[Kind]
    extent: int = 1  # how far (s) past its block's start a block's sessions can still send

    def block(self, b: int) -> list[tuple[Kind, Table]]:  # pragma: no cover - interface
        """Session tables of the sessions that begin in block ``b``."""
        raise NotImplementedError


class SpecStream(Stream):
    """Independent Poisson session families (registrations, connections, floods...)."""

    def __init__(self, name: str, seed: int, specs: Sequence[RowSpec]):
        self.name = name
        self.salt = salt_of(seed, "stream", name)
        self.specs = list(specs)
        self.kinds = [s.kind for s in self.specs] + [m.kind for s in self.specs for m in s.mirrors]
        self.extent = BLOCK + max((k.max_dur for k in self.kinds), default=1)

    def block(self, b: int) -> list[tuple[Kind, Table]]:
        t = np.arange(b * BLOCK, (b + 1) * BLOCK, dtype=np.int64)
        out: list[tuple[Kind, Table]] = []
        for i, spec in enumerate(self.specs):
            lam = np.maximum(np.asarray(spec.rate(t), dtype=np.float64), 0.0)
            if not lam.any():
                continue
            rng = _rng(self.salt, i, b)
            counts = rng.poisson(lam) if spec.poisson else np.diff(np.floor(np.cumsum(lam) + 0.5), prepend=0.0)
            starts = np.repeat(t, counts.astype(np.int64))
            if len(starts) == 0:
                continue
            tab = spec.shape(rng, starts)
            tab.host = spec.kind.hosts.pick(rng, len(tab))
            tab.uid = (
                (np.uint64(b) << np.uint64(32)) | (np.uint64(i) << np.uint64(24)) | np.arange(len(tab), dtype=np.uint64)
            )
            out.append((spec.kind, tab))
            out.extend(mirror_tables(rng, tab, spec.mirrors))
        return out


def mirror_tables(rng: np.random.Generator, tab: Table, mirrors: Sequence[Mirror]) -> list[tuple[Kind, Table]]:
    """The mirrored copies of ``tab`` (each mirror takes its hash slice of the sessions)."""
    out: list[tuple[Kind, Table]] = []
    for j, m in enumerate(mirrors):
        u = u01(tab.uid, 0xF0 + j) if m.share != (0.0, 1.0) else None
        sub = tab if u is None else tab.take((u >= m.share[0]) & (u < m.share[1]))
        if len(sub) == 0:
            continue
        sub = replace(
            sub,
            b0=sub.b0 + m.extra_bytes * sub.p0,
            bm=sub.bm + m.extra_bytes * sub.pm,
            be=sub.be + m.extra_bytes * sub.pe,
            host=m.kind.hosts.pick(rng, len(sub)),
        )
        out.append((m.kind, sub))
    return out


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SecondFlows:
    """The flows of one second (unsampled truth: what the routers' interfaces carried).

    Each row covers this second only ("per-second flow updates"); ``new`` marks a flow's first
    second, ``age`` its seconds since it began (a router re-exports flows older than 60 s).
    """

    t: int
    flows: np.ndarray  # FLOW_DTYPE
    target: np.ndarray  # int32 index into TrafficModel.targets
    host: np.ndarray  # int32 index into the target component's hosts
    kind: np.ndarray  # int32 index into TrafficModel.kinds
    new: np.ndarray  # bool
    age: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.flows)


METRICS = (
    "packets",
    "bytes",
    "flows",
    "new_connections",
    "icmp_packets",
    "long_lived_flows",
    "sessions",
    "sip_scanner_packets",
    "sip_malformed_packets",
)
(_PK, _BY, _FL, _NC, _IC, _LL, _SE, _SC, _BAD) = range(len(METRICS))
_SIP0 = len(METRICS)
_SZ0 = _SIP0 + N_SIP
N_METRICS = _SZ0 + N_SIZE


@dataclass
class TargetTotals:
    """Per-second truth for one target (all arrays have ``seconds`` entries).

    ``flows`` counts flows that began in the second (what a NetFlow collector's record count
    tracks, plus ``long_lived_flows`` re-exports; an sFlow collector counts packets instead),
    ``sessions`` concurrent calls/connections/allocations (long flows only),
    ``long_lived_flows`` the flows older than 60 s open in the second (as the collector counts
    them: a long record in every tick it is spread over),
    ``distinct_sources`` the expected number of distinct source addresses,
    ``sip`` packets per SipMethod code (column = code), ``size_histogram`` packets per
    TrafficTick.SIZE_BUCKETS bytes/packet bucket.
    """

    target: TargetDef
    packets: np.ndarray
    bytes: np.ndarray
    flows: np.ndarray
    new_connections: np.ndarray
    icmp_packets: np.ndarray
    long_lived_flows: np.ndarray
    sessions: np.ndarray
    sip_scanner_packets: np.ndarray
    sip_malformed_packets: np.ndarray
    distinct_sources: np.ndarray
    sip: np.ndarray  # (seconds, N_SIP)
    size_histogram: np.ndarray  # (seconds, N_SIZE)

    @property
    def distinct_sources_estimate(self) -> np.ndarray:
        """Alias: the distinct-source figure is an expectation, not a count."""
        return self.distinct_sources

    def sip_method(self, name: str) -> np.ndarray:
        """Packets per second of one SIP method (``"INVITE"``, ``"REGISTER"``...)."""
        return np.asarray(self.sip[:, SipMethod.BY_NAME[name]])

    def sip_methods(self, i: int) -> dict[str, int]:
        """The method mix of second ``i`` as TrafficTick.sip_methods has it."""
        return {SipMethod.NAMES[m]: int(v) for m, v in enumerate(self.sip[i].tolist()) if v and m}

    def bytes_per_packet(self) -> np.ndarray:
        """Mean bytes per packet per second (0 where no packets)."""
        return np.divide(self.bytes, self.packets, out=np.zeros(len(self.bytes)), where=self.packets > 0)


@dataclass
class Totals:
    """Per-target, per-second totals of ``[start, start + seconds)``: configured targets first,
    then per-host targets (tiers with ``per_host`` and a component wider than one address)."""

    start: int
    seconds: int
    targets: list[TargetTotals]

    def by_id(self) -> dict[str, TargetTotals]:
        """Totals keyed by target id."""
        return {t.target.id: t for t in self.targets}

    def find(self, tier: Tier | str, component: str | None = None, label: str | None = None) -> TargetTotals:
        """The first configured (not per-host) target of a tier, optionally by component and by
        monitor label (``udp/5060``)."""
        for tt in self.targets:
            td = tt.target
            if td.host is not None or td.tier != Tier(tier):
                continue
            if component is not None and td.component != component:
                continue
            if label is None or td.monitor.label() == label:
                return tt
        raise KeyError(f"no target {tier} {component or ''} {label or ''}")


# ---------------------------------------------------------------------------------------------
# the model


def _tls_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(packets, bytes) of a client's side of a TLS handshake with its first request."""
    p = rng.integers(6, 10, n)
    return p, p * 52 + rng.integers(600, 2400, n)


class TrafficModel:
    """The platform of a config, its traffic and (optionally) attack streams on top."""

    def __init__(self, config: VoxGuardConfig, *, seed: int = 0, params: ModelParams | None = None):
        self.config = config
        self.seed = seed
        self.params = params or ModelParams()
        self.targets: list[TargetDef] = list(config.iter_targets())
        self.kinds: list[Kind] = []
        self.streams: list[Stream] = []
        self.attack_streams: list[Stream] = []
        self._cache: OrderedDict[tuple[int, int], list[tuple[Kind, Table]]] = OrderedDict()
        rng = _rng(salt_of(seed, "hosts"))
        self.hosts: dict[str, HostSet] = {}
        self.component_tier: dict[str, Tier] = {}
        self.component_region: dict[str, str | None] = {}
        own: list[IPNetwork] = [w.prefix for w in config.whitelist]
        for tier, tc in config.tiers.items():
            for comp in tc.components:
                self.hosts[comp.name] = HostSet.of(comp.addresses, rng)
                self.component_tier[comp.name] = tier
                self.component_region[comp.name] = comp.region
                own.extend(comp.addresses)
        self.allocator = AddressAllocator(seed, own)
        self._slot_base: list[int] = []
        n = 0
        for td in self.targets:
            self._slot_base.append(n)
            n += len(self.hosts[td.component])
        self.n_slots = n
        self.pops: dict[str, Population] = {}
        self._pop_index: dict[int, int] = {}
        for stream in baseline_streams(self):
            self._register(stream, attack=False)

    # -- building -------------------------------------------------------------------------------

    def target_for(self, component: str, proto: int, port: int | None = None) -> int | None:
        """Index of the first target of ``component`` whose monitor matches proto (and port)."""
        for i, td in enumerate(self.targets):
            if td.component != component or td.host is not None:
                continue
            mon = td.monitor
            if mon.protocol != Protocol.ANY and proto not in mon.protocol.numbers:
                continue
            if mon.ports is not None and (port is None or not mon.ports.low <= port <= mon.ports.high):
                continue
            return i
        return None

    def components(self, tier: Tier) -> list[str]:
        """Component names of a tier (empty when the config has no such tier)."""
        tc = self.config.tiers.get(tier)
        return [c.name for c in tc.components] if tc else []

    def activity(self, name: str, region: str | None, **kw: float) -> Activity:
        """A deterministic activity curve for ``name`` in ``region``'s local time."""
        return Activity(salt_of(self.seed, "activity", name, region or ""), self.params.offset_s(region), **kw)

    def population(self, name: str, n_prefixes: int, n_ips: int, sigma: float = 0.0) -> Population:
        """A new named population of fresh /24s (cached by name)."""
        if name not in self.pops:
            rng = _rng(salt_of(self.seed, "pop", name))
            self.pops[name] = Population.build(name, self.allocator, rng, n_prefixes, n_ips, sigma)
        return self.pops[name]

    def kind(
        self,
        name: str,
        component: str | None,
        proto: int,
        ports: tuple[int, int] | None,
        pop: Population,
        *,
        party: int | None = None,
        src_ports: tuple[int, int] = (1024, 65535),
        period: int = 1,
        max_dur: int = 1,
        persistent: bool = False,
        even_ports: bool = False,
        stable_src_port: bool = False,
        icmp: tuple[int, int] = (0, 0),
        tcp_end: int = FIN | ACK,
    ) -> Kind | None:
        """A kind of flows to ``component`` on (proto, destination ports), or None when nothing
        monitors it (the model only generates what some target would count)."""
        if component is None:
            return None
        target = self.target_for(component, proto, None if ports is None else ports[0])
        if target is None:
            return None
        return Kind(
            name=name,
            target=target,
            hosts=self.hosts[component],
            proto=proto,
            pop=pop,
            party=salt_of(self.seed, "party", name) if party is None else party,
            dst_ports=ports or (0, 0),
            src_ports=src_ports,
            period=period,
            max_dur=max_dur,
            persistent=persistent,
            even_ports=even_ports,
            stable_src_port=stable_src_port,
            icmp=icmp,
            tcp_end=tcp_end,
        )

    def port_range(self, component: str, role: str, default: tuple[int, int]) -> tuple[int, int]:
        """The destination port range a component's monitor of ``role`` watches (or ``default``)."""
        for td in self.targets:
            mon = td.monitor
            if td.component == component and mon.effective_role == role and mon.ports is not None:
                return (mon.ports.low, mon.ports.high)
        return default

    def pick_component(self, tier: Tier, region: str | None) -> str | None:
        """The component of ``tier`` in ``region`` (else the tier's first), None without the tier."""
        names = self.components(tier)
        for c in names:
            if self.component_region[c] == region:
                return c
        return names[0] if names else None

    def _register(self, stream: Stream, *, attack: bool) -> None:
        for k in stream.kinds:
            if k.index < 0:
                k.index = len(self.kinds)
                self.kinds.append(k)
            if id(k.pop) not in self._pop_index:
                self._pop_index[id(k.pop)] = len(self._pop_index)
        (self.attack_streams if attack else self.streams).append(stream)

    def add_stream(self, stream: Stream) -> None:
        """Add an attack (or any extra) stream on top of the baseline."""
        self._register(stream, attack=True)

    # -- block cache ----------------------------------------------------------------------------

    def _all_streams(self, include_attacks: bool) -> list[tuple[int, Stream]]:
        out = list(enumerate(self.streams))
        if include_attacks:
            out += [(len(self.streams) + i, s) for i, s in enumerate(self.attack_streams)]
        return out

    def _tables(self, sid: int, stream: Stream, b: int) -> list[tuple[Kind, Table]]:
        key = (sid, b)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        tabs = stream.block(b)
        self._cache[key] = tabs
        while len(self._cache) > 4 * (len(self.streams) + len(self.attack_streams)) + 8:
            self._cache.popitem(last=False)
        return tabs

    def _blocks(self, stream: Stream, t0: int, t1: int) -> range:
        """Blocks whose sessions can send in [t0, t1)."""
        return range((t0 - stream.extent) // BLOCK, (t1 - 1) // BLOCK + 1)

    # -- per-second flows -------------------------------------------------------------------------

    def second(self, t: int, *, include_attacks: bool = True) -> SecondFlows:
        """All flows of second ``t`` (epoch seconds)."""
        pieces: list[SecondFlows] = []
        for sid, stream in self._all_streams(include_attacks):
            for b in self._blocks(stream, t, t + 1):
                for kind, tab in self._tables(sid, stream, b):
                    piece = _rows_at(kind, tab, t)
                    if piece is not None:
                        pieces.append(piece)
        if not pieces:
            z = np.zeros(0, dtype=np.int32)
            return SecondFlows(t, np.zeros(0, FLOW_DTYPE), z, z, z, np.zeros(0, bool), np.zeros(0, np.int64))
        return SecondFlows(
            t,
            np.concatenate([p.flows for p in pieces]),
            np.concatenate([p.target for p in pieces]),
            np.concatenate([p.host for p in pieces]),
            np.concatenate([p.kind for p in pieces]),
            np.concatenate([p.new for p in pieces]),
            np.concatenate([p.age for p in pieces]),
        )

    def seconds(self, start: int, n: int, *, include_attacks: bool = True) -> Iterator[SecondFlows]:
        """``second(t)`` for ``n`` consecutive seconds."""
        for t in range(start, start + n):
            yield self.second(t, include_attacks=include_attacks)

    # -- totals fast path -----------------------------------------------------------------------

    def totals(self, start: int, seconds: int, *, per_host: bool = True, include_attacks: bool = True) -> Totals:
        """Per-target per-second totals over ``[start, start + seconds)`` without building flows.

        Memory grows with ``seconds`` x targets; for days use :meth:`iter_totals`.
        """
        n = int(seconds)
        acc = np.zeros((N_METRICS, self.n_slots, n))
        rows: dict[int, np.ndarray] = {}
        pops: dict[int, Population] = {}
        grouped: dict[int, list[Table]] = {}
        for sid, stream in self._all_streams(include_attacks):
            for b in self._blocks(stream, start, start + n):
                for kind, tab in self._tables(sid, stream, b):
                    part = _overlapping(tab, start, start + n)
                    if part is not None:
                        grouped.setdefault(kind.index, []).append(part)
        for ki, parts in grouped.items():
            kind = self.kinds[ki]
            pid = self._pop_index[id(kind.pop)]
            pops[pid] = kind.pop
            if pid not in rows:
                rows[pid] = np.zeros((self.n_slots, n))
            lo = self._slot_base[kind.target]
            hi = lo + len(kind.hosts)
            tab = parts[0] if len(parts) == 1 else _concat(parts)
            _accumulate(kind, tab, start, n, acc[:, lo:hi, :], rows[pid][lo:hi])
        return self._render(start, n, acc, rows, pops, per_host)

    def iter_totals(
        self,
        start: int,
        seconds: int,
        *,
        chunk: int = BLOCK,
        per_host: bool = True,
        include_attacks: bool = True,
    ) -> Iterator[Totals]:
        """``totals`` in chunks of ``chunk`` seconds (bounded memory for days of history)."""
        t = start
        end = start + seconds
        while t < end:
            n = min(chunk, end - t)
            yield self.totals(t, n, per_host=per_host, include_attacks=include_attacks)
            t += n

    def _render(
        self,
        start: int,
        n: int,
        acc: np.ndarray,
        rows: dict[int, np.ndarray],
        pops: dict[int, Population],
        per_host: bool,
    ) -> Totals:

        def make(td: TargetDef, a: np.ndarray, pop_rows: dict[int, np.ndarray]) -> TargetTotals:
            distinct = np.zeros(n)
            for p, r in pop_rows.items():
                if r.any():
                    distinct += pops[p].distinct(r)
            return TargetTotals(
                target=td,
                distinct_sources=distinct,
                sip=a[_SIP0 : _SIP0 + N_SIP].T,
                size_histogram=a[_SZ0 : _SZ0 + N_SIZE].T,
                **{name: a[i] for i, name in enumerate(METRICS)},
            )

        out: list[TargetTotals] = []
        hosted: list[TargetTotals] = []
        for i, td in enumerate(self.targets):
            base = self._slot_base[i]
            k = len(self.hosts[td.component])
            if k == 1:
                out.append(make(td, acc[:, base, :], {p: r[base] for p, r in rows.items()}))
            else:
                sl = slice(base, base + k)
                out.append(make(td, acc[:, sl, :].sum(axis=1), {p: r[sl].sum(axis=0) for p, r in rows.items()}))
            if per_host and self.per_host(td.component):
                for h, addr in enumerate(self.hosts[td.component].addrs):
                    slot = base + h
                    hosted.append(make(td.for_host(addr), acc[:, slot, :], {p: r[slot] for p, r in rows.items()}))
        return Totals(start, n, out + hosted)

    def per_host(self, component: str) -> bool:
        """Whether the collector makes per-host targets for this component (as classify does)."""
        tier = self.component_tier[component]
        tc = self.config.tiers[tier]
        comp = next(c for c in tc.components if c.name == component)
        return tc.per_host and any(n.prefixlen < n.max_prefixlen for n in comp.addresses)

    def expected(self, tier: Tier | str, metric: str, t0: int, t1: int, component: str | None = None,
                 label: str | None = None) -> float:  # fmt: skip
        """Mean of a baseline (no attacks) metric of one target over ``[t0, t1)``; ``metric`` may
        be a TargetTotals field or ``sip:INVITE``-style."""
        tot = self.totals(t0, max(1, t1 - t0), per_host=False, include_attacks=False)
        tt = tot.find(tier, component, label)
        if metric.startswith("sip:"):
            return float(tt.sip_method(metric[4:]).mean())
        return float(np.asarray(getattr(tt, metric)).mean())


# ---------------------------------------------------------------------------------------------
# per-second rows of one kind


def _rows_at(kind: Kind, tab: Table, t: int) -> SecondFlows | None:
    lo = int(np.searchsorted(tab.start, t - kind.max_dur + 1, side="left"))
    hi = int(np.searchsorted(tab.start, t, side="right"))
    if hi <= lo:
        return None
    s = tab.start[lo:hi]
    d = tab.dur[lo:hi]
    age = t - s
    first = age == 0
    last = (age == d - 1) & ~first
    mid = (age < d - 1) & ~first & (age % kind.period == 0)
    keep = first | last | mid
    pk = np.where(first, tab.p0[lo:hi], np.where(last, tab.pe[lo:hi], tab.pm[lo:hi]))
    by = np.where(first, tab.b0[lo:hi], np.where(last, tab.be[lo:hi], tab.bm[lo:hi]))
    keep &= pk > 0
    if not keep.any():
        return None
    ix = lo + np.flatnonzero(keep)
    first, last, age, pk, by, d = first[keep], last[keep], age[keep], pk[keep], by[keep], d[keep]
    uid = tab.uid[ix]
    n = len(ix)
    src = kind.pop.pick(u01(uid, kind.party))
    host = tab.host[ix]
    f = np.zeros(n, dtype=FLOW_DTYPE)
    f["sampling"] = 1
    v6 = kind.hosts.v6[host]
    f["dst_hi"], f["dst_lo"] = kind.hosts.hi[host], kind.hosts.lo[host]
    f["src_hi"] = np.where(v6, _V6_SRC_HI, np.uint64(0))
    f["src_lo"] = np.where(v6, src.astype(np.uint64), v4_to_lo(src))
    f["ip_version"] = np.where(v6, 6, 4)
    f["proto"] = kind.proto
    f["packets"], f["bytes"] = pk, by
    if kind.proto in (TCP, UDP):
        sp_key = src.astype(np.uint64) if kind.stable_src_port else uid
        f["src_port"] = _port(u01(sp_key, kind.party ^ 0x51), kind.src_ports, kind.even_ports)
        f["dst_port"] = _port(u01(uid, kind.party ^ 0xD5 ^ kind.index), kind.dst_ports, kind.even_ports)
    else:
        f["icmp_type"], f["icmp_code"] = kind.icmp
    if kind.proto == TCP:
        flags = np.where(first, np.where(pk > 1, SYN | ACK | PSH, SYN), ACK | PSH)
        flags = np.where(last, kind.tcp_end, flags)
        if kind.persistent:
            flags[:] = ACK | PSH
        f["tcp_flags"] = flags
    t_ms = np.uint64(t * 1000)
    off = (u01(uid, 0x0FF) * 900).astype(np.uint64)
    start_ms = np.where(first, t_ms + off, t_ms)
    short = first & (d == 1)
    f["start_ms"] = start_ms
    f["end_ms"] = np.where(short, start_ms + np.where(pk > 1, (u01(uid, 0x0FE) * 99).astype(np.uint64), 0),
                           np.where(last, t_ms + off, t_ms + np.uint64(999)))  # fmt: skip
    f["sip_method"] = np.where(first, tab.method[ix], 0)
    f["sip_flags"] = np.where(first, tab.flags[ix], 0)
    new = first & (not kind.persistent)
    if kind.persistent:
        f, host = _merge(f, host)
        n = len(f)
        new = np.zeros(n, dtype=bool)
        age = np.zeros(n, dtype=np.int64)
    return SecondFlows(
        t,
        f,
        np.full(n, kind.target, dtype=np.int32),
        host.astype(np.int32),
        np.full(n, kind.index, dtype=np.int32),
        np.asarray(new, dtype=bool),
        np.asarray(age, dtype=np.int64),
    )


def _port(u: np.ndarray, rng: tuple[int, int], even: bool) -> np.ndarray:
    lo, hi = rng
    p = lo + (u * (hi - lo + 1)).astype(np.int64)
    if even:
        p = np.maximum(p & ~1, lo + (lo & 1))
    return np.asarray(np.minimum(p, hi))


def _merge(f: np.ndarray, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per (host, 5-tuple, SIP method): a standing SBC->registrar flow in this second."""
    key = np.stack([host.astype(np.uint64), f["src_lo"], f["src_port"].astype(np.uint64),
                    f["sip_method"].astype(np.uint64)], axis=1)  # fmt: skip
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    out = f[first].copy()
    out["packets"] = np.bincount(inv, weights=f["packets"].astype(np.float64)).astype(np.uint64)
    out["bytes"] = np.bincount(inv, weights=f["bytes"].astype(np.float64)).astype(np.uint64)
    t0 = f["start_ms"].min() // 1000 * 1000
    out["start_ms"] = t0
    out["end_ms"] = t0 + 999
    out["sip_flags"] = 0
    return out, host[first]


# ---------------------------------------------------------------------------------------------
# totals of one kind


def _accumulate(
    kind: Kind,
    tab: Table,
    c0: int,
    n: int,
    view: np.ndarray,
    prow: np.ndarray,
) -> None:
    """Add ``tab``'s contribution to the window ``[c0, c0 + n)``: ``view`` is (metric, host, n)
    for the kind's target, ``prow`` (host, n) the rows drawn from the kind's population."""
    s, d = tab.start, tab.dur
    e = s + d - 1
    h_n = view.shape[1]
    width = h_n * n
    tcp_new = kind.proto == TCP and not kind.persistent
    icmp = kind.proto in (1, 58)

    def add(metric: int, ix: np.ndarray, w: np.ndarray) -> None:
        view[metric] += np.bincount(ix, weights=w, minlength=width).reshape(h_n, n)

    def point(m: np.ndarray, times: np.ndarray, p: np.ndarray, b: np.ndarray, first: bool) -> None:
        whole = bool(m.all())
        if not whole and not m.any():
            return

        def pick(col: np.ndarray) -> np.ndarray:
            return col if whole else col[m]

        ix = pick(tab.host) * n + (pick(times) - c0)
        pk, by = pick(p).astype(np.float64), pick(b).astype(np.float64)
        add(_PK, ix, pk)
        add(_BY, ix, by)
        if icmp:
            add(_IC, ix, pk)
        rows = np.bincount(ix[pk > 0], minlength=width).reshape(h_n, n)
        prow[...] += rows
        if first:
            if not kind.persistent:
                view[_FL] += rows
            if tcp_new:
                view[_NC] += rows
            _split(add, _SIP0, pick(tab.method), ix, pk, skip_zero=True)
            fl = pick(tab.flags)
            if fl.any():
                add(_SC, ix, pk * ((fl & SipFlag.SCANNER_UA) != 0))
                add(_BAD, ix, pk * ((fl & SipFlag.MALFORMED) != 0))
        _split(add, _SZ0, _bucket(pick(b), pick(p)), ix, pk)

    point((s >= c0) & (s < c0 + n), s, tab.p0, tab.b0, True)
    if kind.max_dur > 1:
        point((d >= 2) & (e >= c0) & (e < c0 + n), e, tab.pe, tab.be, False)
        _middle(kind, tab, c0, n, view, prow)


def _split(
    add: Callable[[int, np.ndarray, np.ndarray], None],
    base: int,
    codes: np.ndarray,
    ix: np.ndarray,
    w: np.ndarray,
    skip_zero: bool = False,
) -> None:
    """``add(base + code, ...)`` for each small code present (one pass when all rows share it)."""
    present = _present(codes).tolist()
    if len(present) == 1:
        if not (skip_zero and present[0] == 0):
            add(base + present[0], ix, w)
        return
    for code in present:
        if code or not skip_zero:
            sel = codes == code
            add(base + code, ix[sel], w[sel])


def _middle(kind: Kind, tab: Table, c0: int, n: int, view: np.ndarray, prow: np.ndarray) -> None:
    """Middle seconds (every ``period`` s), open sessions and long-lived re-exports, through
    difference arrays cumulated with a stride of ``period``."""
    s, d = tab.start, tab.dur
    e = s + d - 1
    live = (e >= c0) & (s < c0 + n)
    if not live.any():
        return
    s, d, e, sl = s[live], d[live], e[live], tab.host[live]
    pm, bm = tab.pm[live].astype(np.float64), tab.bm[live].astype(np.float64)
    p = kind.period
    h_n = view.shape[1]
    length = -(-(n + p) // p) * p
    # middle points s + k*p (k >= 1) with s + k*p < e: the first one at or after c0
    a = s + np.maximum(1, -(-(c0 - s) // p)) * p
    b = s + ((d - 2) // p + 1) * p
    ok = (a < e) & (a < c0 + n)
    if ok.any():
        ai, bi, si = (a[ok] - c0) + sl[ok] * length, (b[ok] - c0), sl[ok]
        end = bi < length  # ends past the window need no closing entry
        bi = bi[end] + si[end] * length
        bucket = _bucket(bm, pm)
        chans: list[tuple[np.ndarray, list[np.ndarray]]] = [
            (pm[ok], [view[_PK]] + ([view[_IC]] if kind.proto in (1, 58) else [])),
            (bm[ok], [view[_BY]]),
            ((pm[ok] > 0).astype(np.float64), [prow]),
        ]
        bk = bucket[ok]
        for code in _present(bk).tolist():
            chans.append((pm[ok] * (bk == code), [view[_SZ0 + code]]))
        size = h_n * length
        for w, targets in chans:
            diff = np.bincount(ai, weights=w, minlength=size) - np.bincount(bi, weights=w[end], minlength=size)
            cum = diff.reshape(h_n, length // p, p).cumsum(axis=1).reshape(h_n, length)[:, :n]
            for tgt in targets:
                tgt += cum
    # open sessions; flows older than the active timeout: as many per second as are open (the
    # collector counts a long record in every tick it is spread over)
    view[_SE] += _open(sl, np.maximum(s, c0) - c0, np.minimum(e, c0 + n - 1) - c0, h_n, n)
    old = d > LONG_LIVED_S
    if old.any():
        a_old = np.maximum(s[old] + LONG_LIVED_S, c0) - c0
        e_old = np.minimum(e[old], c0 + n - 1) - c0
        view[_LL] += _open(sl[old], a_old, e_old, h_n, n)


_BUCKET_LUT = np.searchsorted(SIZE_BUCKETS, np.arange(65_536), side="left").astype(np.int64)


def _bucket(by: np.ndarray, pk: np.ndarray) -> np.ndarray:
    """TrafficTick.SIZE_BUCKETS index of the mean bytes/packet, as the collector buckets it."""
    bpp = np.ceil(by / np.maximum(pk, 1)).astype(np.int64)
    return np.asarray(_BUCKET_LUT[np.clip(bpp, 0, 65_535)])


def _present(codes: np.ndarray) -> np.ndarray:
    """Which small non-negative codes occur (index 0 included when present)."""
    return np.flatnonzero(np.bincount(codes.astype(np.int64)))


def _open(slot: np.ndarray, a: np.ndarray, e: np.ndarray, h_n: int, n: int) -> np.ndarray:
    """Count of intervals [a, e] (window offsets) covering each second, per host slot."""
    ok = a <= e
    size = h_n * (n + 1)
    diff = np.bincount(slot[ok] * (n + 1) + a[ok], minlength=size) - np.bincount(
        slot[ok] * (n + 1) + e[ok] + 1, minlength=size
    )
    return np.asarray(diff.reshape(h_n, n + 1).cumsum(axis=1)[:, :n], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# the platform's baseline streams


class CallStream(Stream):
    """Calls: INVITE/responses/BYE at the SBC, their copies to the registrar, two RTP legs to a
    media gateway and, for some, a TURN allocation, all drawn from one call table so that
    signalling and media move together."""

    def __init__(
        self,
        m: TrafficModel,
        name: str,
        rate: Rate,
        *,
        sbc: str | None,
        ep_pop: Population,
        trunk_pop: Population,
        fwd: tuple[Kind | None, Kind | None] = (None, None),
        answer: float | None = None,
        trunk_share: float | None = None,
    ):
        p = m.params
        self.name = name
        self.salt = salt_of(m.seed, "stream", name)
        self.rate = rate
        self.answer = p.answer_ratio if answer is None else answer
        self.trunk_share = p.trunk_originated if trunk_share is None else trunk_share
        self.params = p
        region = m.component_region.get(sbc or "") if sbc else None
        media = m.pick_component(Tier.MEDIA, region)
        turn = m.pick_component(Tier.TURN, region)
        ep, tr = salt_of(m.seed, "party", name, "ep"), salt_of(m.seed, "party", name, "trunk")
        sip = (5060, 5060)

        def sipk(role: str, pop: Population, party: int) -> Kind | None:
            return m.kind(f"{name}:{role}", sbc, UDP, sip, pop, party=party, stable_src_port=True)

        self.k: dict[str, Kind | None] = {
            "invite_ep": sipk("invite-ep", ep_pop, ep),
            "invite_tr": sipk("invite-trunk", trunk_pop, tr),
            "resp_ep": sipk("resp-ep", ep_pop, ep),
            "resp_tr": sipk("resp-trunk", trunk_pop, tr),
            "bye_ep": sipk("bye-ep", ep_pop, ep),
            "bye_tr": sipk("bye-trunk", trunk_pop, tr),
            "fwd_udp": fwd[0],
            "fwd_tcp": fwd[1],
        }
        mx = p.max_call_s + 1
        if media is not None:
            rtp = m.port_range(media, "media", (10000, 20000))
            for role, pop, party in (("rtp_ep", ep_pop, ep), ("rtp_tr", trunk_pop, tr)):
                self.k[role] = m.kind(
                    f"{name}:{role}", media, UDP, rtp, pop, party=party, src_ports=(10000, 59999),
                    even_ports=True, max_dur=mx,
                )  # fmt: skip
        if turn is not None:
            relay = m.port_range(turn, "media", (49152, 65535))
            key = f"peers:{media}"
            gw = m.pops.get(key) or Population(key, _v4_of(m.hosts[media].addrs if media else ("10.0.0.1",)))
            m.pops[key] = gw
            self.k["turn_udp"] = m.kind(f"{name}:turn-udp", turn, UDP, (3478, 3478), ep_pop, party=ep, max_dur=mx)
            self.k["turn_tls"] = m.kind(f"{name}:turn-tls", turn, TCP, (5349, 5349), ep_pop, party=ep, max_dur=mx)
            self.k["turn_peer"] = m.kind(
                f"{name}:turn-peer",
                turn,
                UDP,
                relay,
                gw,
                src_ports=(10000, 20000),
                even_ports=True,
                max_dur=mx,
            )
        self.kinds = [k for k in self.k.values() if k is not None]
        self.extent = BLOCK + 16 + mx

    def block(self, b: int) -> list[tuple[Kind, Table]]:
        t = np.arange(b * BLOCK, (b + 1) * BLOCK, dtype=np.int64)
        lam = np.maximum(np.asarray(self.rate(t), dtype=np.float64), 0.0)
        if not lam.any():
            return []
        rng = _rng(self.salt, b)
        s = np.repeat(t, rng.poisson(lam))
        n = len(s)
        if n == 0:
            return []
        p = self.params
        uid = (np.uint64(b) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
        answered = rng.random(n) < self.answer
        trunk = rng.random(n) < self.trunk_share
        ring = rng.integers(2, 13, n)
        talk = np.clip(rng.lognormal(np.log(p.talk_median_s), p.talk_sigma, n), 1, p.max_call_s).astype(np.int64)
        bpp = np.choose(rng.choice(4, n, p=[0.6, 0.25, 0.05, 0.10]), [200, 210, 214, 170]) + np.where(
            rng.random(n) < 0.1, rng.integers(-10, 11, n), 0
        )
        big_sdp = rng.random(n) < 0.15  # offers too big for UDP go to the registrar over TCP
        hang_ep = rng.random(n) < 0.5
        inv_b = rng.integers(850, 1300, n) + rng.integers(380, 480, n)
        resp_p = np.where(answered, 3, 2)
        resp_b = np.where(answered, rng.integers(1500, 1900, n), rng.integers(800, 1000, n))
        bye_t = s + ring + talk
        bye_b = rng.integers(420, 560, n)
        a0 = s + ring
        out: list[tuple[Kind, Table]] = []
        fwd: dict[str, list[Table]] = {"fwd_udp": [], "fwd_tcp": []}
        inv = SipMethod.INVITE

        def add(role: str, tab: Table, udp_fwd: np.ndarray | None = None) -> None:
            k = self.k.get(role)
            tab = tab.sorted() if len(tab) and not np.all(np.diff(tab.start) >= 0) else tab
            if k is not None and len(tab):
                out.append((k, tab))
            if udp_fwd is not None and len(tab):
                fw = replace(tab, b0=tab.b0 + 90 * tab.p0)
                fwd["fwd_udp"].append(fw.take(udp_fwd))
                fwd["fwd_tcp"].append(fw.take(~udp_fwd))

        for role, m in (("ep", ~trunk), ("tr", trunk)):
            tab = make_table(s[m], p0=2, b0=inv_b[m], method=inv, flags=SipFlag.SDP, uid=uid[m])
            add(f"invite_{role}", tab, ~big_sdp[m])
        for role, m in (("ep", trunk), ("tr", ~trunk)):  # the callee answers
            tab = make_table(s[m], p0=resp_p[m], b0=resp_b[m], method=SipMethod.RESPONSE, uid=uid[m])
            add(f"resp_{role}", tab, np.ones(len(tab), bool))
        for role, m in (("ep", answered & hang_ep), ("tr", answered & ~hang_ep)):
            tab = make_table(bye_t[m], p0=1, b0=bye_b[m], method=SipMethod.BYE, uid=uid[m])
            add(f"bye_{role}", tab, np.ones(len(tab), bool))
        for role in ("fwd_udp", "fwd_tcp"):
            k = self.k.get(role)
            parts = [x for x in fwd[role] if len(x)]
            if k is not None and parts:
                tab = _concat(parts).sorted()
                tab.host = k.hosts.pick(rng, len(tab))
                out.append((k, tab))
        # media: both legs to one gateway, 50 packets/s, codec-sized packets
        a = answered
        gw = self._hosts_for("rtp_ep", rng, n)
        p_first = rng.integers(10, 51, n)
        p_last = rng.integers(5, 51, n)
        for role in ("rtp_ep", "rtp_tr"):
            add(role, _media(a0, talk, p_first, p_last, bpp, 0, gw, uid, a))
        turn = a & (rng.random(n) < p.turn_share)
        tls = turn & (rng.random(n) < p.turn_tls_share)
        relay = self._hosts_for("turn_udp", rng, n)
        ctrl = 4 * 150  # Allocate (twice, with credentials), CreatePermission, ChannelBind
        for role, m, over in (("turn_udp", turn & ~tls, 4), ("turn_tls", tls, 4 + 12 + 29)):
            tab = _media(a0, talk, p_first, p_last, bpp, over, relay, uid, m)
            add(role, replace(tab, p0=tab.p0 + 4, b0=tab.b0 + ctrl))
        add("turn_peer", _media(a0, talk, p_first, p_last, bpp, 0, relay, uid, turn))
        return out

    def _hosts_for(self, role: str, rng: np.random.Generator, n: int) -> np.ndarray:
        k = self.k.get(role) or self.k.get(role.replace("udp", "tls"))
        return k.hosts.pick(rng, n) if k is not None else np.zeros(n, dtype=np.int64)


def _concat(parts: Sequence[Table]) -> Table:
    return Table(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Table)})


def _overlapping(tab: Table, t0: int, t1: int) -> Table | None:
    """The sessions of ``tab`` that send in [t0, t1), or None."""
    if len(tab) == 0 or int(tab.start[0]) >= t1:
        return None
    hi = int(np.searchsorted(tab.start, t1, side="left"))
    if int(tab.start[hi - 1]) >= t0 and int(tab.start[0]) >= t0:
        return tab if hi == len(tab) else tab.take(slice(0, hi))
    live = tab.start[:hi] + tab.dur[:hi] > t0
    if not live.any():
        return None
    return tab.take(np.flatnonzero(live))


def _v4_of(addrs: Sequence[str]) -> np.ndarray:
    """IPv4 addresses as uint32 (IPv6 ones folded to their low 32 bits)."""
    return np.array([int(ipaddress.ip_address(a)) & 0xFFFF_FFFF for a in addrs], dtype=np.uint32)


def _sizes(lo: int, hi: int, per: int = 1) -> Shape:
    """One-second flows of ``per`` packets of lo..hi bytes each."""

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        return make_table(s, p0=per, b0=rng.integers(lo, hi + 1, len(s)) * per)

    return shape


def _with(shape: Shape, **cols: int) -> Shape:
    def wrapped(rng: np.random.Generator, s: np.ndarray) -> Table:
        return replace(shape(rng, s), **{k: np.full(len(s), v, dtype=np.uint8) for k, v in cols.items()})

    return wrapped


def _scaled(curve: Activity, k: float) -> Rate:
    return lambda t: curve(t) * k


def _session_shape(
    dur: Callable[[np.random.Generator, int], np.ndarray],
    mid: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
    first: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]] = _tls_like,
    end: tuple[int, int] = (2, 104),
) -> Shape:
    """Connections: a handshake second, middle seconds, a closing second."""

    def shape(rng: np.random.Generator, s: np.ndarray) -> Table:
        n = len(s)
        p0, b0 = first(rng, n)
        pm, bm = mid(rng, n)
        return make_table(s, dur=dur(rng, n), p0=p0, b0=b0, pm=pm, bm=bm, pe=end[0], be=end[1])

    return shape


def baseline_streams(m: TrafficModel) -> list[Stream]:
    """The normal traffic of every tier in the config."""
    p = m.params
    sc = p.scale
    streams: list[Stream] = []
    sbcs = m.components(Tier.SBC)
    n_sbc = max(1, len(sbcs))
    share = 1.0 / n_sbc
    trunk_pop = _trunks(m)
    sip = (5060, 5060)
    ep_pops: list[Population] = []
    edge: list[str | None] = list(sbcs) or [None]
    for sbc in edge:
        label = sbc or "edge"
        region = m.component_region.get(sbc) if sbc else None
        business = m.activity("calls", region)
        presence = m.activity("presence", region, base=0.55, amp=0.45, slow=0.03, fast=0.02, daily=0.02)
        flat = m.activity("flat", region, base=1.0, amp=0.0, slow=0.05, fast=0.03, daily=0.02)
        ep_pop = m.population(
            f"endpoints:{label}",
            int(p.endpoint_prefixes * share * min(1.0, sc) ** 0.5) + 1,
            int(p.endpoint_ips * share * min(1.0, sc)) + 20,
            sigma=0.8,
        )
        ep_pops.append(ep_pop)
        registrar = m.pick_component(Tier.REGISTRAR, region)
        sbc_pop = Population(f"sbc:{label}", _v4_of(m.hosts[sbc].addrs) if sbc else np.array([0x0AFF0001], np.uint32))
        fwd = (
            m.kind(f"{label}:fwd-udp", registrar, UDP, sip, sbc_pop, src_ports=sip, persistent=True),
            m.kind(f"{label}:fwd-tcp", registrar, TCP, sip, sbc_pop, src_ports=sip, persistent=True),
        )
        reg_rate = p.endpoints * sc * share / p.register_interval_s
        register = m.kind(f"{label}:register", sbc, UDP, sip, ep_pop, stable_src_port=True)
        reg_shape = _with(_reg_shape, method=SipMethod.REGISTER)
        specs: list[RowSpec] = []
        if register is not None:
            mirrors = tuple(Mirror(k, extra_bytes=90) for k in fwd[:1] if k is not None)
            specs.append(RowSpec(register, _scaled(presence, reg_rate), reg_shape, mirrors))
        elif fwd[0] is not None:  # no SBC in the config: the registrar still sees registrations
            specs.append(RowSpec(fwd[0], _scaled(presence, reg_rate), reg_shape))
        opt = _with(_sizes(380, 520), method=SipMethod.OPTIONS)
        for kd, rate in (
            (m.kind(f"{label}:options-ep", sbc, UDP, sip, ep_pop, stable_src_port=True),
             _scaled(presence, p.ep_options_per_s * sc * share)),
            (m.kind(f"{label}:options-trunk", sbc, UDP, sip, trunk_pop, src_ports=sip),
             _scaled(flat, p.trunk_ips * share / p.trunk_options_interval_s)),
        ):  # fmt: skip
            if kd is not None:
                specs.append(RowSpec(kd, rate, opt))
        tls = m.kind(f"{label}:tls", sbc, TCP, (5061, 5061), ep_pop, period=10, max_dur=4 * int(p.tls_mean_s))
        if tls is not None:
            mean = p.tls_mean_s
            tls_shape = _session_shape(
                _exp_dur(mean, 1, 4 * mean), lambda r, n: (np.full(n, 2), 2 * r.integers(60, 110, n))
            )
            specs.append(RowSpec(tls, _scaled(presence, p.tls_connections * sc * share / mean), tls_shape))
        echo = m.kind(f"{label}:icmp-echo", sbc, ICMP, None, m.population("pingers", 1, p.icmp_pingers),
                      persistent=True, icmp=(8, 0))  # fmt: skip
        if echo is not None:
            specs.append(RowSpec(echo, _scaled(flat, float(p.icmp_pingers)), _sizes(84, 84)))
        unreach = m.kind(f"{label}:icmp-unreach", sbc, ICMP, None, ep_pop, icmp=(3, 3))
        if unreach is not None:
            specs.append(RowSpec(unreach, _scaled(business, p.icmp_unreach_per_s * sc * share), _sizes(56, 120)))
        streams.append(SpecStream(f"sip:{label}", m.seed, specs))
        streams.append(CallStream(m, f"calls:{label}", _scaled(business, p.peak_cps * sc * share), sbc=sbc,
                                  ep_pop=ep_pop, trunk_pop=trunk_pop, fwd=fwd))  # fmt: skip
    apis = m.components(Tier.API)
    if apis:
        clients = m.population("api-clients", int(p.api_prefixes * min(1.0, sc) ** 0.5) + 1,
                               int(p.api_clients * min(1.0, sc)) + 10, sigma=1.5)  # fmt: skip
        for api in apis:
            streams.append(_api_stream(m, api, clients, 1.0 / len(apis)))
    turns = m.components(Tier.TURN)
    for turn in turns:
        kd = m.kind(f"{turn}:stun", turn, UDP, (3478, 3478), ep_pops[0])
        if kd is not None:
            act = m.activity("calls", m.component_region[turn])
            spec = RowSpec(kd, _scaled(act, p.stun_per_s * sc / len(turns)), _sizes(56, 120))
            streams.append(SpecStream(f"stun:{turn}", m.seed, [spec]))
    streams.extend(_generic_streams(m, streams))
    return streams


def _reg_shape(rng: np.random.Generator, s: np.ndarray) -> Table:
    """REGISTER, 401 challenge, REGISTER with credentials: two requests from the endpoint."""
    n = len(s)
    return make_table(s, p0=2, b0=rng.integers(480, 720, n) + rng.integers(560, 800, n))


def _trunks(m: TrafficModel) -> Population:
    """Carrier interconnects: the whitelist's trunk prefixes when it names some, else invented."""
    for w in m.config.whitelist:
        text = w.reason.lower()
        if w.prefix.version == 4 and ("trunk" in text or "carrier" in text):
            hosts = list(w.prefix.hosts())[: m.params.trunk_ips] or [w.prefix.network_address]
            m.pops["trunks"] = Population("trunks", np.array([int(h) for h in hosts], dtype=np.uint32))
            return m.pops["trunks"]
    return m.population("trunks", 3, m.params.trunk_ips)


def _api_stream(m: TrafficModel, api: str, clients: Population, share: float) -> Stream:
    p = m.params
    sc = p.scale
    act = m.activity("api", m.component_region[api], base=0.25, amp=0.75)
    dash = m.activity("dashboards", m.component_region[api], base=0.15, amp=0.85, slow=0.05)
    specs: list[RowSpec] = []
    rest = _session_shape(
        lambda r, n: np.clip(r.lognormal(np.log(4.0), 1.0, n), 1, 600).astype(np.int64),
        lambda r, n: _pm_bm(r, r.integers(1, 5, n), 80, 700),
    )
    for port, cps in ((443, p.api_peak_cps), (8443, p.rest_8443_cps)):
        kd = m.kind(f"{api}:https-{port}", api, TCP, (port, port), clients, max_dur=600)
        if kd is not None:
            specs.append(RowSpec(kd, _scaled(act, cps * sc * share), rest))
    ws = m.kind(f"{api}:websocket", api, TCP, (8443, 8443), clients, max_dur=4 * BLOCK)
    if ws is not None:
        mean = p.websocket_mean_s
        ws_shape = _session_shape(
            _exp_dur(mean, 5, 4 * BLOCK),
            lambda r, n: (np.ones(n, np.int64), r.integers(52, 140, n)),
            first=lambda r, n: (r.integers(8, 13, n), r.integers(1800, 2600, n)),
        )
        specs.append(RowSpec(ws, _scaled(dash, p.websockets * sc * share / mean), ws_shape))
    return SpecStream(f"api:{api}", m.seed, specs)


def _exp_dur(mean: float, lo: float, hi: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Exponential durations (memoryless connection lifetimes), clipped."""
    return lambda r, n: np.clip(r.exponential(mean, n), lo, hi).astype(np.int64)


def _media(
    a0: np.ndarray,
    talk: np.ndarray,
    p_first: np.ndarray,
    p_last: np.ndarray,
    bpp: np.ndarray,
    over: int,
    host: np.ndarray,
    uid: np.ndarray,
    m: np.ndarray,
) -> Table:
    """One media stream per selected call: 50 packets/s of ``bpp + over`` bytes for the talk time."""
    size = bpp[m] + over
    return make_table(
        a0[m], dur=talk[m], p0=p_first[m], b0=p_first[m] * size, pm=50, bm=50 * size,
        pe=p_last[m], be=p_last[m] * size, host=host[m], uid=uid[m],
    )  # fmt: skip


def _pm_bm(rng: np.random.Generator, pm: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    return pm, pm * rng.integers(lo, hi + 1, len(pm))


def _generic_streams(m: TrafficModel, streams: Sequence[Stream]) -> list[Stream]:
    """Light traffic for monitors that no modelled behaviour reaches, so every target has a baseline."""
    covered = {k.target for s in streams for k in s.kinds}
    out: list[Stream] = []
    pop = m.population("internet", 400, 3000, sigma=1.0)
    for i, td in enumerate(m.targets):
        if i in covered:
            continue
        mon = td.monitor
        proto = {Protocol.TCP: TCP, Protocol.ICMP: ICMP}.get(mon.protocol, UDP)
        ports = (mon.ports.low, mon.ports.high) if mon.ports else None
        kd = m.kind(f"{td.component}:generic:{mon.label()}", td.component, proto, ports, pop,
                    icmp=(8, 0) if proto == ICMP else (0, 0))  # fmt: skip
        if kd is None or kd.target != i:
            continue
        act = m.activity("generic", td.region, base=0.3, amp=0.7)
        spec = RowSpec(kd, _scaled(act, m.params.generic_per_s * m.params.scale), _sizes(64, 1400, per=2))
        out.append(SpecStream(f"generic:{td.id}", m.seed, [spec]))
    return out
