"""What the gateway shows of its traffic: metrics (``/metrics``) and access logs.

Pure cores (:mod:`.metrics` for the registry and the Prometheus text exposition,
:mod:`.record` for one exchange's record and its JSON line, :mod:`.request_id`, :mod:`.merge`
for a site of worker processes shown as one gateway) and one thin
adapter (:mod:`.observer`) that the data path calls once at each end of an exchange.
"""
