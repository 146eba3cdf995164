"""Synthetic, seeded clickstream and the live demo."""
