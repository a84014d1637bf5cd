"""Fleet-wide settings pushed from one authority to every site (docs/fleet.md)."""
