//! `uniffi-bindgen`: UniFFI's command line, at the version converge-ffi is built with
//! (`generate --library target/debug/libconverge_ffi.so --language swift|python --out-dir DIR`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
