//! framebus-capture (placeholder until its issue lands).
