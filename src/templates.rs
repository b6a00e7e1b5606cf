//! Files compiled into the binary.
