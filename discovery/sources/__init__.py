"""Discovery sources: adapters that turn an outside view (config, mDNS, Consul) into events."""
