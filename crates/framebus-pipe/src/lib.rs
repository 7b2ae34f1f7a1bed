//! framebus-pipe (placeholder until its issue lands).
