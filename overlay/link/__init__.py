"""Links: verified mTLS (TLS 1.3, ALPN h2) connections between gateways: dial, accept, session."""
