"""The demo: example services (and, later, the three-site orchestration)."""
