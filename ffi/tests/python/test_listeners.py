"""Listener callbacks across the boundary: the status's phases, record changes, cancellation,
and a client dropped while its worker runs."""

import asyncio
import gc
import json
import os
import threading
import time

import converge_ffi as cf
from conftest import Server, Tokens, open_client, wait_for


class Statuses(cf.StatusListener):
    def __init__(self):
        self.seen = []
        self.threads = set()

    def on_status(self, status):
        self.threads.add(threading.current_thread().name)
        self.seen.append(status)

    def phases(self):
        names = []
        for s in self.seen:
            name = next(n for n in ("IDLE", "SYNCING", "OFFLINE", "BACKING_OFF", "NEEDS_AUTH", "FAILED")
                        if getattr(s.phase, f"is_{n}")())
            if not names or names[-1] != name:
                names.append(name)
        return names


class Changes(cf.RecordListener):
    def __init__(self):
        self.changes = []
        self.missed = 0

    def on_change(self, entity, record_id, record):
        self.changes.append((entity, record_id, record))

    def on_missed(self, count):
        self.missed += count

    def count(self, record_id):
        return sum(1 for _, r, _ in self.changes if r == record_id)


def test_status_goes_offline_and_back_online(tmp_path, wire, tenant):
    srv = Server(str(tmp_path))
    url = srv.url(wire)
    srv.stop()
    c = open_client(tmp_path, "c", url, Tokens(tenant), backoff_base_ms=100, backoff_cap_ms=400)
    statuses = Statuses()
    handle = c.on_status(statuses)
    wait_for("the current status", lambda: statuses.seen)
    c.start()
    c.create("notes", json.dumps({"title": "written offline"}))
    wait_for("offline", lambda: c.status().phase.is_OFFLINE() or c.status().phase.is_BACKING_OFF())
    assert c.status().pending == 1
    assert c.status().last_error is not None and c.status().last_error.error_class == "retryable"

    srv.start()
    c.network_changed(True)
    wait_for("synced", lambda: c.status().pending == 0 and c.status().phase.is_IDLE(), timeout=30)
    wait_for("live", lambda: c.status().notices == cf.Notices.LIVE, timeout=30)
    time.sleep(0.2)
    phases = statuses.phases()
    assert phases[0] == "IDLE", phases
    assert "SYNCING" in phases and ("OFFLINE" in phases or "BACKING_OFF" in phases), phases
    assert phases[-1] == "IDLE", phases
    assert statuses.seen[-1].pending == 0 and statuses.seen[-1].last_success_ms is not None
    assert "MainThread" not in statuses.threads
    handle.cancel()
    c.close()
    srv.stop()


def test_the_worker_answers_a_401_with_one_refresh_and_never_shows_needs_auth(server, wire, tenant, tmp_path):
    from conftest import token
    tokens = Tokens(tenant, first=token(tenant, secret="not-the-servers-secret"))
    c = open_client(tmp_path, "c", server.url(wire), tokens)
    statuses = Statuses()
    handle = c.on_status(statuses)
    c.create("notes", json.dumps({"title": "needs a fresh token"}))
    c.start()
    wait_for("synced", lambda: c.status().pending == 0 and c.status().last_success_ms is not None, timeout=30)
    assert tokens.refreshes == 1
    assert "NEEDS_AUTH" not in statuses.phases(), statuses.phases()
    assert "SYNCING" in statuses.phases()
    handle.cancel()
    c.close()


def test_record_listeners_fire_once_per_change_and_never_after_cancel(server, wire, tenant, tmp_path):
    url = server.url(wire)
    a = open_client(tmp_path, "a", url, Tokens(tenant))
    b = open_client(tmp_path, "b", url, Tokens(tenant))
    notes_on_b, all_on_b, cancelled = Changes(), Changes(), Changes()
    h1 = b.on_record_change("notes", notes_on_b)
    h2 = b.on_record_change(None, all_on_b)
    h3 = b.on_record_change(None, cancelled)
    h3.cancel()
    assert h3.is_cancelled()

    note = a.create("notes", json.dumps({"title": "one"}))
    task = a.create("tasks", json.dumps({"title": "two"}))
    asyncio.run(a.sync_now())
    asyncio.run(b.sync_now())
    wait_for("two changes", lambda: len(all_on_b.changes) >= 2)
    time.sleep(0.3)  # a second call would have come by now
    assert [(e, r) for e, r, _ in notes_on_b.changes] == [("notes", note.id)]
    assert all_on_b.count(note.id) == 1 and all_on_b.count(task.id) == 1
    record = notes_on_b.changes[0][2]
    assert record.state == cf.RecordState.SYNCED and json.loads(record.json) == {"title": "one"}

    b.patch("notes", note.id, json.dumps({"title": "one!"}))
    wait_for("the local write", lambda: notes_on_b.count(note.id) == 2)
    assert notes_on_b.changes[-1][2].state == cf.RecordState.PENDING
    h1.cancel()
    b.delete("notes", note.id)
    wait_for("the delete", lambda: all_on_b.count(note.id) == 3)
    time.sleep(0.3)
    assert notes_on_b.count(note.id) == 2, "a cancelled listener is never called again"
    assert all_on_b.changes[-1][2].deleted
    assert cancelled.changes == [] and cancelled.missed == 0
    del h2
    gc.collect()
    b.create("notes", "{}")
    time.sleep(0.3)
    assert all_on_b.count(note.id) == 3 and len(all_on_b.changes) == 4, "a dropped handle cancels"


def threads():
    return len(os.listdir("/proc/self/task"))


def test_dropping_clients_while_their_workers_run_neither_crashes_nor_leaks(server, tenant, tmp_path):
    def cycle(i):
        c = open_client(tmp_path, f"d{i}", server.url("grpc" if i % 2 else "http"), Tokens(tenant))
        c.on_status(Statuses())
        h = c.on_record_change(None, Changes())
        c.start()
        for n in range(20):
            c.create("notes", json.dumps({"n": n}))
        del c, h
        gc.collect()

    cycle(0)
    time.sleep(0.5)
    before = threads()
    for i in range(1, 9):
        cycle(i)
    wait_for("threads to end", lambda: threads() <= before + 2, timeout=20)

    # What the dropped clients wrote is all on disk, and every op applied exactly once.
    for i in list(range(9)) + [0]:
        c = open_client(tmp_path, f"d{i}", server.url("http"), Tokens(tenant))
        asyncio.run(c.sync_now())
        c.close()
    c = open_client(tmp_path, "d0", server.url("http"), Tokens(tenant))
    records = c.list("notes")
    assert len(records) == 9 * 20
    assert all(r.version == 1 and r.state == cf.RecordState.SYNCED for r in records)
    c.close()
