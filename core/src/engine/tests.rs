//! The in-memory session tests.
