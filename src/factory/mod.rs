//! Built-in factory types.
