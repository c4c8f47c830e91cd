//! A simulated server for the in-memory session tests.
