"""Segment rules: pure functions from (profile, moment) to memberships, one module per family."""
