//! framebus-kernels (placeholder until its issue lands).
