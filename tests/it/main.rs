//! Cross-crate tests: the dependency rules of the workspace.

mod deps;
