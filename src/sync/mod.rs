//! The sync engine: pull → map → validate → identity → merge → commit →
//! deliver. This module grows with the engine; [`merge`] is its field-level
//! three-way merge.

pub mod merge;
