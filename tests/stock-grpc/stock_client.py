"""A stock gRPC client written elsewhere: compiles proto/converge/v1/sync.proto with grpcio-tools
and calls a running `converge serve` as any other language's client would. Exits non-zero with
a message on the first difference from the contract.

Environment: GRPC_TARGET (host:port), TOKEN (a token of tenant t1), OTHER_TOKEN (tenant t2),
PROTO_ROOT (the folder holding converge/v1/sync.proto).
"""

import os
import sys
import tempfile
import threading
import uuid

from grpc_tools import protoc


def compile_proto(root, out):
    args = ["protoc", f"-I{root}", f"--python_out={out}", f"--grpc_python_out={out}", "converge/v1/sync.proto"]
    if protoc.main(args) != 0:
        sys.exit("grpc_tools.protoc could not compile converge/v1/sync.proto")
    sys.path.insert(0, out)


out = tempfile.mkdtemp()
compile_proto(os.environ["PROTO_ROOT"], out)

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from converge.v1 import sync_pb2 as pb  # noqa: E402
from converge.v1 import sync_pb2_grpc  # noqa: E402

TARGET, TOKEN, OTHER = os.environ["GRPC_TARGET"], os.environ["TOKEN"], os.environ["OTHER_TOKEN"]


def auth(token=TOKEN, key=None):
    md = [("authorization", f"Bearer {token}")]
    if key is not None:
        md.append(("idempotency-key", key))
    return md


def reason(err):
    """(status code name, ErrorInfo reason, ErrorInfo domain) of a failed call."""
    status = rpc_status.from_call(err)
    if status is None:
        sys.exit(f"{err.code().name} without grpc-status-details-bin: {err.details()}")
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return err.code().name, info.reason, info.domain
    sys.exit(f"{err.code().name} without an ErrorInfo")


def expect(cond, what):
    if not cond:
        sys.exit(f"contract broken: {what}")


def create(record_id, title):
    return pb.Mutation(
        op_id=str(uuid.uuid4()),
        entity="notes",
        record_id=record_id,
        op=pb.OP_CREATE,
        base_version=0,
        patch='{"title": "%s"}' % title,
        hlc="1764064800000-0000-py-1",
    )


channel = grpc.insecure_channel(TARGET)
sync = sync_pb2_grpc.SyncStub(channel)

health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="converge.v1.Sync"))
expect(health.status == health_pb2.HealthCheckResponse.SERVING, "the health service says SERVING")

# A subscriber from the start of an empty feed hears of the first push.
notices = []
stream = sync.Subscribe(pb.SubscribeRequest(), metadata=auth())
listener = threading.Thread(target=lambda: notices.append(next(stream)), daemon=True)
listener.start()

batch = pb.PushRequest(device_id="py-1", mutations=[create("r1", "from python")])
resp, call = sync.Push.with_call(batch, metadata=auth(key="py-key-1"))
expect([(a.op_id, a.version) for a in resp.accepted] == [(batch.mutations[0].op_id, 1)], "the create is accepted at 1")
again, call = sync.Push.with_call(batch, metadata=auth(key="py-key-1"))
expect(again == resp, "a replay answers the same")
expect(dict(call.initial_metadata()).get("idempotent-replayed") == "true", "a replay says idempotent-replayed: true")

page = sync.Pull(pb.PullRequest(), metadata=auth())
expect(len(page.changes) == 1 and page.changes[0].record_id == "r1", "the feed holds the record")
expect('"from python"' in page.changes[0].fields, "fields travel as JSON text")
listener.join(timeout=10)
expect(notices and notices[0].cursor == page.cursor, "the subscriber heard of the push, with the feed's end")
stream.cancel()

record = sync.GetRecord(pb.GetRecordRequest(entity="notes", record_id="r1"), metadata=auth())
expect(record.version == 1 and not record.deleted, "GetRecord returns the record")

failures = [
    (lambda: sync.Push(batch, metadata=auth()), ("INVALID_ARGUMENT", "idempotency_key_missing")),
    (lambda: sync.Pull(pb.PullRequest()), ("UNAUTHENTICATED", "unauthorized")),
    (lambda: sync.Push(pb.PushRequest(device_id="py-1", mutations=[create("r2", "x")]), metadata=auth(key="py-key-1")),
     ("FAILED_PRECONDITION", "idempotency_key_reused")),
    (lambda: sync.GetRecord(pb.GetRecordRequest(entity="notes", record_id="r1"), metadata=auth(OTHER)),
     ("NOT_FOUND", "not_found")),
    (lambda: sync.Pull(pb.PullRequest(cursor="c999"), metadata=auth()), ("FAILED_PRECONDITION", "cursor_expired")),
    (lambda: sync.Push(pb.PushRequest(device_id="py-1", mutations=[pb.Mutation(op_id="x")]), metadata=auth(key="k2")),
     ("INVALID_ARGUMENT", "invalid_request")),
]
for call_it, (code, want) in failures:
    try:
        call_it()
        sys.exit(f"expected {code} {want}, the call succeeded")
    except grpc.RpcError as err:
        got = reason(err)
        expect(got == (code, want, "converge.dev"), f"expected {code} {want} in domain converge.dev, got {got}")

print("stock client: every call answered as the contract says")
