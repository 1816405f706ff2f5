"""API keys: hashing, verification, bootstrap admin key and the FastAPI scope dependency."""

from __future__ import annotations

import hashlib
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, WebSocket
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from starlette.websockets import WebSocketDisconnect

from voxguard.shared.auth import KeyInfo, KeyStore, Scope, hash_key, require_scope
from voxguard.shared.db import make_engine
from voxguard.shared.http import create_app


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> KeyStore:
    ks = KeyStore(engine)
    ks.migrate()
    return ks


def test_scopes_are_ordered() -> None:
    assert [s.rank for s in (Scope.READ, Scope.OPERATE, Scope.ADMIN)] == [0, 1, 2]
    assert Scope.ADMIN.allows("operate") and Scope.OPERATE.allows(Scope.READ)
    assert not Scope.READ.allows("operate") and not Scope.OPERATE.allows("admin")
    with pytest.raises(ValueError):
        Scope("root")


def test_create_and_verify(store: KeyStore) -> None:
    token = store.create_key("noc dashboard", "operate")
    assert token.startswith("vg_") and len(token) == 59
    info = store.verify(token)
    assert isinstance(info, KeyInfo)
    assert (info.name, info.scope, info.prefix) == ("noc dashboard", Scope.OPERATE, token[:15])
    assert info.revoked is False and info.created_at.tzinfo is not None
    assert store.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    assert store.list_keys()[0].last_used_at is not None
    with pytest.raises(ValueError):
        store.create_key("  ", "read")
    with pytest.raises(ValueError):
        store.create_key("x", "superuser")


def test_revoked_keys_stop_working(store: KeyStore) -> None:
    token = store.create_key("ci", "read")
    key_id = token.split("_")[1]
    assert store.revoke(f"vg_{key_id}") is True
    assert store.verify(token) is None
    assert store.revoke("vg_000000000000") is False
    assert store.list_keys()[0].revoked is True


def test_only_the_hash_is_stored(store: KeyStore, engine: Engine, db_url: str) -> None:
    token = store.create_key("secret-check", "admin")
    secret = token.split("_", 2)[2]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM auth_api_keys")).mappings().all()
    assert len(rows) == 1
    dumped = " ".join(str(v) for v in rows[0].values())
    assert secret not in dumped and token not in dumped
    assert rows[0]["key_hash"] == hashlib.sha256(token.encode()).hexdigest() == hash_key(token)
    if db_url.startswith("sqlite"):
        engine.dispose()  # flush everything the WAL holds into the files we grep
        db_file = Path(db_url.removeprefix("sqlite:///"))
        for f in db_file.parent.glob(db_file.name + "*"):
            assert secret.encode() not in f.read_bytes(), f


HOSTILE = [
    "",
    " ",
    "vg_",
    "x" * (1024 * 1024),
    "vg_" + "a" * 12 + "_" + "é" * 43,
    "vg_' OR '1'='1' --_" + "a" * 43,
    "vg_aaaaaaaaaaaa_' UNION SELECT key_hash FROM auth_api_keys --",
    "vg_%_%",
    "\x00" * 64,
    "Bearer vg_aaaaaaaaaaaa_" + "a" * 43,
]


@pytest.mark.parametrize("token", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_tokens_never_verify(store: KeyStore, token: str) -> None:
    store.create_key("real", "admin")
    assert store.verify(token) is None


def test_a_valid_key_with_extra_characters_is_refused(store: KeyStore) -> None:
    token = store.create_key("real", "admin")
    for variant in (token + "x", " " + token, token.upper(), token[:-1]):
        assert store.verify(variant) is None


@pytest.fixture
def sqlite_store(sqlite_url: str) -> KeyStore:
    ks = KeyStore(make_engine(sqlite_url))
    ks.migrate()
    ks.create_key("real", "admin")
    return ks


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(token=st.one_of(st.text(max_size=120), st.from_regex(r"vg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", fullmatch=True)))
def test_fuzzed_tokens_never_verify(sqlite_store: KeyStore, token: str) -> None:
    assert sqlite_store.verify(token) is None


def test_admin_key_bootstrap(store: KeyStore, tmp_path: Path) -> None:
    var = tmp_path / "var"
    path = store.ensure_admin_key(var)
    assert path == var / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    info = store.verify(token)
    assert info is not None and info.scope is Scope.ADMIN
    assert store.ensure_admin_key(var) is None  # a key exists: nothing new
    assert store.count() == 1
    assert [p.name for p in var.iterdir()] == ["admin.key"]  # no temp file left behind


def test_no_admin_key_when_keys_exist(store: KeyStore, tmp_path: Path) -> None:
    store.create_key("ops", "read")
    assert store.ensure_admin_key(tmp_path) is None
    assert not (tmp_path / "admin.key").exists()


def test_concurrent_first_starts_make_one_admin_key(store: KeyStore, tmp_path: Path) -> None:
    results: list[Path | None] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            results.append(store.ensure_admin_key(tmp_path / f"svc{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len([r for r in results if r is not None]) == 1
    assert store.count() == 1


# -- the FastAPI dependency -------------------------------------------------------------------


def _app(store: KeyStore) -> TestClient:
    router = APIRouter()

    @router.get("/incidents")
    def incidents() -> dict[str, str]:
        return {"ok": "read"}

    @router.post("/mitigations/1/withdraw")
    def withdraw(key: KeyInfo = Depends(require_scope("operate"))) -> dict[str, str]:
        return {"by": key.name}

    @router.delete("/keys/1", dependencies=[Depends(require_scope("admin"))])
    def delete_key() -> dict[str, str]:
        return {"ok": "admin"}

    @router.websocket("/events")
    async def events(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"event": "hello"})
        await ws.close()

    return TestClient(create_app("mitigate", [router], keys=store))


def test_scope_enforcement_over_http(store: KeyStore) -> None:
    read, operate, admin = (store.create_key(s, s) for s in ("read", "operate", "admin"))
    with _app(store) as client:

        def call(method: str, path: str, token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.request(method, path, headers=headers)

        r = call("GET", "/v1/incidents", None)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"error": {"code": "unauthorized", "message": "an API key is required"}}
        r = call("GET", "/v1/incidents", "vg_000000000000_" + "a" * 43)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json()["error"]["code"] == "invalid_key"
        assert call("GET", "/v1/incidents", read).status_code == 200

        r = call("POST", "/v1/mitigations/1/withdraw", read)
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        assert 'scope="operate"' in r.headers["www-authenticate"]
        r = call("POST", "/v1/mitigations/1/withdraw", operate)
        assert r.status_code == 200 and r.json() == {"by": "operate"}
        assert call("POST", "/v1/mitigations/1/withdraw", admin).status_code == 200

        assert call("DELETE", "/v1/keys/1", operate).status_code == 403
        assert call("DELETE", "/v1/keys/1", admin).status_code == 200

        r = client.get("/v1/incidents", headers={"Authorization": f"Basic {read}"})
        assert r.status_code == 401
        store.revoke(read.split("_")[1])
        assert call("GET", "/v1/incidents", read).status_code == 401


def test_websocket_needs_a_key(store: KeyStore) -> None:
    read = store.create_key("ws", "read")
    with _app(store) as client:
        with client.websocket_connect("/v1/events", headers={"Authorization": f"Bearer {read}"}) as ws:
            assert ws.receive_json() == {"event": "hello"}
        with client.websocket_connect(f"/v1/events?access_token={read}") as ws:
            assert ws.receive_json() == {"event": "hello"}
        with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect("/v1/events") as ws:
            ws.receive_json()
        assert exc.value.code == 1008


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer ",
        b"Bearer " + b"A" * (1024 * 1024),
        "Bearer vg_é€_x".encode(),
        b"Bearer vg_\xff\xfe\xfd",
        b"Bearer vg_aaaaaaaaaaaa_' OR 1=1; DROP TABLE auth_api_keys; --",
        b"bearer",
        b"",
    ],
    ids=["empty", "1MiB", "utf8", "latin1-bytes", "sql", "no-token", "blank"],
)
async def test_hostile_authorization_headers_get_401(store: KeyStore, header: bytes) -> None:
    store.create_key("real", "admin")
    app = create_app("mitigate", [APIRouter()], keys=store)

    @app.get("/v1/ping", dependencies=[Depends(require_scope("read"))])
    def ping() -> dict[str, bool]:
        return {"pong": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/v1/ping", headers=[(b"authorization", header)])
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] in ("unauthorized", "invalid_key")
    assert store.count() == 1  # the table survived
