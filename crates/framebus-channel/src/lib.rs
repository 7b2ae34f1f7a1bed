//! framebus-channel (placeholder until its issue lands).
