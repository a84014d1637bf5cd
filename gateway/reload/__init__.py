"""Configuration without restart: a pure plan (old config -> new config) and its Trio adapter."""
