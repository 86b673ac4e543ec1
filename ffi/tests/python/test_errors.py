"""Wrong use from the foreign side is a typed error with its class and code, never a crash."""

import asyncio
import json

import pytest

import converge_ffi as cf
from conftest import SECRET, Tokens, open_client, token


def test_bad_input_is_rejected_with_a_code(server, tenant, tmp_path):
    c = open_client(tmp_path, "c", server.url("http"), Tokens(tenant))
    cases = [
        lambda: c.create("notes", "{not json"),
        lambda: c.create("notes", "[1, 2]"),
        lambda: c.create("0notes", "{}"),
        lambda: c.create("", "{}"),
        lambda: c.put("notes", "", "{}"),
        lambda: c.patch("notes", "no-such-record", "{}"),
        lambda: c.retry_op("not-a-uuid"),
        lambda: c.resolve(12345, cf.Resolution.ACCEPT_SERVER()),
        lambda: c.resolve(12345, cf.Resolution.MERGED(json="nope")),
    ]
    for case in cases:
        with pytest.raises(cf.ConvergeError.Rejected) as e:
            case()
        assert e.value.code in ("invalid_input", "not_found"), e.value
    with pytest.raises(cf.ConvergeError.Rejected) as e:
        c.create("notes", '{"secret": ')
    assert "secret" not in str(e.value), "an error never quotes what the app wrote"
    assert c.list("notes") == [], "nothing was half-written"


def test_open_refuses_a_bad_url_or_policy(tmp_path, tenant):
    with pytest.raises(cf.ConvergeError.Rejected):
        open_client(tmp_path, "u", "ftp://example", Tokens(tenant, first="t"))
    with pytest.raises(cf.ConvergeError.Rejected) as e:
        open_client(tmp_path, "p", "http://127.0.0.1:9", Tokens(tenant, first="t"), policies={"notes": "coin_flip"})
    assert e.value.code == "invalid_input"


def test_a_closed_client_says_so(server, tenant, tmp_path):
    c = open_client(tmp_path, "c", server.url("grpc"), Tokens(tenant))
    c.create("notes", json.dumps({"title": "kept"}))
    c.close()
    c.close()  # twice is fine
    for call in (lambda: c.list("notes"), lambda: c.create("notes", "{}"), c.status, c.start):
        with pytest.raises(cf.ConvergeError.Fatal) as e:
            call()
        assert e.value.code == "closed"
    with pytest.raises(cf.ConvergeError.Fatal):
        asyncio.run(c.sync_now())
    again = open_client(tmp_path, "c", server.url("grpc"), Tokens(tenant))
    assert [json.loads(r.json) for r in again.list("notes")] == [{"title": "kept"}]


def test_a_refused_token_is_refreshed_once_by_the_provider(server, wire, tenant, tmp_path):
    tokens = Tokens(tenant, first=token(tenant, secret="not-the-servers-secret"))
    c = open_client(tmp_path, "c", server.url(wire), tokens)
    c.create("notes", "{}")
    assert asyncio.run(c.sync_now()).accepted == 1
    assert tokens.refreshes == 1
    assert all(not name.startswith("MainThread") for name in tokens.threads), "never the app's main thread"


def test_a_token_that_cannot_be_refreshed_is_unauthorized(server, wire, tenant, tmp_path):
    tokens = Tokens(tenant, first=token(tenant, secret="not-" + SECRET), refuse_refresh=True)
    c = open_client(tmp_path, "c", server.url(wire), tokens)
    c.create("notes", "{}")
    with pytest.raises(cf.ConvergeError.Unauthorized):
        asyncio.run(c.sync_now())
    assert c.status().phase.is_NEEDS_AUTH()
    assert c.status().pending == 1, "nothing is dropped"


def test_an_encrypted_store_needs_its_key_and_can_be_rekeyed(server, tenant, tmp_path):
    url = server.url("http")
    c = open_client(tmp_path, "enc", url, Tokens(tenant), encryption_key="a passphrase")
    c.create("notes", json.dumps({"title": "Secret-Marmot-42"}))
    c.close()
    for name in ("enc.db", "enc.db-wal"):
        if (tmp_path / name).exists():
            assert b"Secret-Marmot-42" not in (tmp_path / name).read_bytes()
    with pytest.raises(cf.ConvergeError.Rejected) as e:
        open_client(tmp_path, "enc", url, Tokens(tenant), encryption_key="wrong")
    assert e.value.code == "wrong_key"
    with pytest.raises(cf.ConvergeError.Rejected) as e:
        open_client(tmp_path, "enc", url, Tokens(tenant))
    assert e.value.code == "key_required"

    raw = "ab" * 32
    cf.rekey_store(str(tmp_path / "enc.db"), "a passphrase", raw)
    c = open_client(tmp_path, "enc", url, Tokens(tenant), encryption_key=raw)
    assert c.status().pending == 1, "the pending change survives the re-key"
    assert asyncio.run(c.sync_now()).accepted == 1
    with pytest.raises(cf.ConvergeError.Rejected) as e:
        cf.rekey_store(str(tmp_path / "enc.db"), "", None)
    assert e.value.code == "bad_key"
