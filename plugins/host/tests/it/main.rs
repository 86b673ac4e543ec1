//! converge-wasm against real plugins built from source (`scripts/build-plugins.sh`): the
//! examples settle their `cases.json`, loading is cached and refuses imports, misbehaving
//! plugins are contained, and two devices converge through the real service on a plugin's merge.

mod cases;
mod containment;
mod e2e;
mod examples;
mod loading;
mod support;
