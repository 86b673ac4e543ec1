//! A stock gRPC client from another language (Python's grpcio, compiling the public proto with
//! grpcio-tools) against a real `converge serve`: the contract holds for clients written
//! elsewhere, not only for our generated one.

use std::path::Path;
use std::process::Command;

use crate::server;

#[test]
fn a_python_grpc_client_compiled_from_the_proto_speaks_the_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (the README's test command does)",
        python.display()
    );
    let srv = server();
    let out = Command::new(&python)
        .arg(root.join("tests/stock-grpc/stock_client.py"))
        .env("GRPC_TARGET", format!("127.0.0.1:{}", srv.grpc_port))
        .env("TOKEN", srv.token("t1", "py").unwrap())
        .env("OTHER_TOKEN", srv.token("t2", "py").unwrap())
        .env("PROTO_ROOT", root.join("proto"))
        .output()
        .expect("run the Python client");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the stock client failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("every call answered as the contract says"), "{stdout}");
}
