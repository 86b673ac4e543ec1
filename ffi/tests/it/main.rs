//! The FFI surface tested from outside: UniFFI's Python bindings of the real cdylib against a
//! real `converge serve`, the committed Swift bindings checked current, and no `unsafe` of our
//! own.

mod bindings;
mod python;
mod source;
