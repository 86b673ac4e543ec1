//! Integration tests of converge-http: the router through `oneshot` (no sockets), the OpenAPI
//! document and metrics, and `HttpClient` against `serve` (and a raw socket) on loopback.

mod docs;
mod fake;
mod helpers;
mod loopback;
mod raw;
mod router;
mod trace;
