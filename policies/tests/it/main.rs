//! Properties of the built-in policies over random records, edits and clocks.

mod field_merge;
mod lww;
mod model;
mod text;
