"""Routes: per L7 address, first match wins (see docs/routes.md)."""
