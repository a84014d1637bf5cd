"""The foundation every package may import: the error root, SPIFFE ID values, DNS-label names,
and the log helpers (redaction, rate limits) that every layer's lines pass through."""
