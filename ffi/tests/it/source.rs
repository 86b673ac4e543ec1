//! The crate's own code has no `unsafe` (its lints allow it only for UniFFI's scaffolding).

#[test]
fn no_unsafe_of_our_own() {
    let src = super::bindings::root().join("ffi/src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("unsafe"), "{} uses unsafe", path.display());
    }
}
