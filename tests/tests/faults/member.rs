//! Faults around sinks and members (filled below).
