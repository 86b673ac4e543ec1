"""Writes, sync, conflicts and held ops through the FFI surface, over both wires."""

import asyncio
import json
import threading

import converge_ffi as cf
from conftest import Server, Tokens, open_client


def sync(client):
    return asyncio.run(client.sync_now())


def test_offline_writes_on_two_clients_sync_and_converge(server, wire, tenant, tmp_path):
    url = server.url(wire)
    a = open_client(tmp_path, "a", url, Tokens(tenant))
    b = open_client(tmp_path, "b", url, Tokens(tenant))
    made = [a.create("notes", json.dumps({"title": f"a{i}", "n": i})) for i in range(5)]
    made += [b.create("notes", json.dumps({"title": f"b{i}"})) for i in range(3)]
    assert all(r.state == cf.RecordState.PENDING and r.version == 0 for r in made)
    assert a.status().pending == 5

    assert sync(a).accepted == 5
    report = sync(b)
    assert report.accepted == 3 and report.pulled == 8, "A's five and its own three back"
    sync(a)
    for client in (a, b):
        records = client.list("notes")
        assert sorted(r.id for r in records) == sorted(r.id for r in made)
        assert all(r.state == cf.RecordState.SYNCED and r.version == 1 for r in records)
        assert client.status().pending == 0
    first = made[0]
    assert json.loads(b.get("notes", first.id).json) == {"title": "a0", "n": 0}
    assert b.get("notes", "never-written") is None
    assert a.device_id() != b.device_id()


def test_a_policy_settles_one_conflict_and_resolve_another(server, wire, tenant, tmp_path):
    url = server.url(wire)
    policies = {"tasks": "field_merge"}
    a = open_client(tmp_path, "a", url, Tokens(tenant), policies=policies)
    b = open_client(tmp_path, "b", url, Tokens(tenant), policies=policies)
    task = a.create("tasks", json.dumps({"status": "open"}))
    note = a.create("notes", json.dumps({"title": "draft"}))
    sync(a)
    sync(b)
    # Both edit the same fields offline; B syncs first.
    a.patch("tasks", task.id, json.dumps({"status": "done"}))
    b.patch("tasks", task.id, json.dumps({"status": "blocked"}))
    a.patch("notes", note.id, json.dumps({"title": "from a"}))
    b.patch("notes", note.id, json.dumps({"title": "from b"}))
    sync(b)
    report = sync(a)
    assert report.conflicts == 2

    # The task's policy settled it by the writes' clocks, and kept the losing value.
    settled = [c for c in a.journal() if c.record_id == task.id]
    assert len(settled) == 1 and settled[0].policy == "field_merge" and settled[0].outcome != "open"
    winner = json.loads(a.get("tasks", task.id).json)["status"]
    assert winner in ("done", "blocked")
    assert {winner, *json.loads(settled[0].losing_json).values()} == {"done", "blocked"}

    # The note has no policy: it waits for the user, who merges.
    open_ = a.conflicts()
    assert [c.record_id for c in open_] == [note.id]
    assert a.get("notes", note.id).state == cf.RecordState.CONFLICT
    assert json.loads(open_[0].server_json) == {"title": "from b"}
    assert "title" in open_[0].fields
    a.resolve(open_[0].id, cf.Resolution.MERGED(json=json.dumps({"title": "from a and b"})))
    assert a.conflicts() == []
    sync(a)
    sync(b)
    for client in (a, b):
        assert json.loads(client.get("notes", note.id).json) == {"title": "from a and b"}
        assert json.loads(client.get("tasks", task.id).json) == {"status": winner}
        assert client.get("notes", note.id).state == cf.RecordState.SYNCED


def test_held_ops_are_listed_retried_and_discarded(tmp_path, tenant):
    srv = Server(str(tmp_path), "--max-record-bytes", "200")
    try:
        c = open_client(tmp_path, "c", srv.url("http"), Tokens(tenant))
        small = c.create("notes", json.dumps({"title": "fits"}))
        big = c.create("notes", json.dumps({"title": "x" * 300}))
        other = c.create("notes", json.dumps({"title": "y" * 300}))
        sync(c)
        held = c.held_ops()
        assert sorted(h.record_id for h in held) == sorted([big.id, other.id])
        assert all(h.state == "needs_action" and "record_too_large" in (h.last_error or "") for h in held)
        assert c.get("notes", big.id).state == cf.RecordState.NEEDS_ACTION
        assert c.get("notes", small.id).state == cf.RecordState.SYNCED
        assert c.status().needs_action == 2

        by_record = {h.record_id: h.op_id for h in held}
        c.discard_op(by_record[big.id])
        c.retry_op(by_record[other.id])
        assert [h.record_id for h in c.held_ops()] == []
        assert c.get("notes", other.id).state == cf.RecordState.PENDING
        sync(c)  # refused again: held again, nothing lost
        assert [h.record_id for h in c.held_ops()] == [other.id]
        assert json.loads(c.get("notes", other.id).json) == {"title": "y" * 300}
    finally:
        srv.stop()


def test_sync_now_from_several_threads_at_once(server, wire, tenant, tmp_path):
    c = open_client(tmp_path, "c", server.url(wire), Tokens(tenant), batch_size=10)
    for i in range(200):
        c.create("notes", json.dumps({"n": i}))
    reports, errors = [], []

    def run():
        try:
            reports.append(sync(c))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(reports) == 6
    assert sum(r.accepted for r in reports) == 200, "every op applied exactly once"
    assert c.status().pending == 0
    assert all(r.state == cf.RecordState.SYNCED for r in c.list("notes"))
