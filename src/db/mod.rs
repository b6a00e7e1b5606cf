//! SQLite schema and migrations.
