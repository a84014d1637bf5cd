"""Gateway configuration: TOML in, frozen dataclasses out, every error with its exact path."""
