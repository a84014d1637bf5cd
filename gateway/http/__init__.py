"""HTTP codecs: strict HTTP/1.1 heads and framing (h1), HTTP/1.1 <-> HTTP/2 header rules."""
