"""Per-user state: the compact profile, its windowed aggregates and its versioned encoding."""
