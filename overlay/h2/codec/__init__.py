"""A lean sans-IO HTTP/2 codec for links (both ends are Isthmus gateways): HPACK, frames,
the inbound header-block layer, SETTINGS and the connection-level half of a connection.
Valid RFC 9113 / RFC 7541 on the wire; python-hyper h2, hpack and hyperframe are its test
oracles (tests/overlay/h2/codec/)."""
