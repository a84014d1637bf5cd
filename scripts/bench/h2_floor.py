"""The HTTP/2 codec's share: CPU that a codec alone spends per cross-site request.

Two figures: python-hyper h2 (:func:`h2_exchange_cpu_us`) and the project's own codec that
links use by default (:func:`lean_exchange_cpu_us`).

Why: a cross-site request crosses the link as one HTTP/2 exchange, which gateway A encodes and
decodes as the client and gateway B as the server.  This measures exactly that, with the
gateways' own h2 set-up (``overlay.h2.setup``: same settings, same validation) and the
header blocks a small proxied GET really carries, in this process, with no I/O at all.  Set
against HAProxy's whole per-request cost from the same run it bounds what any design on h2
can reach: if the codec alone costs N times HAProxy's two hops, the ratio cannot exceed 1/N.
"""

from __future__ import annotations

import time

import h2.events

from overlay.h2.limits import H2Limits
from overlay.h2.setup import new_h2_state, start_h2_state

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"web.default.benchb.isthmus"),
    (b":path", b"/"),
    (b"user-agent", b"wrk"),
    (b"isthmus-caller-site", b"bencha"),
    (b"isthmus-deadline-ms", b"29998"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Thu, 26 Nov 2026 09:00:00 GMT"),
    (b"content-type", b"application/octet-stream"),
    (b"content-length", b"17"),
]
BODY = b"ok isthmus bench\n"


def h2_exchange_cpu_us(exchanges: int = 20_000) -> float:
    """Median-free single figure: CPU microseconds per request/response exchange, both peers."""
    limits = H2Limits()
    client = new_h2_state(client_side=True, limits=limits)
    server = new_h2_state(client_side=False, limits=limits)
    start_h2_state(client, limits)
    start_h2_state(server, limits)
    for _ in range(2):  # prefaces, SETTINGS and their ACKs
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    begin = time.process_time()
    for i in range(exchanges):
        stream_id = client.get_next_available_stream_id()
        request = [*REQUEST[:-1], (b"isthmus-deadline-ms", b"%d" % (30_000 - i % 1000))]
        client.send_headers(stream_id, request, end_stream=True)
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, BODY, end_stream=True)
        for event in client.receive_data(server.data_to_send()):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        server.receive_data(client.data_to_send())  # WINDOW_UPDATEs
        server.data_to_send()
    return (time.process_time() - begin) / exchanges * 1e6


def lean_exchange_cpu_us(exchanges: int = 20_000) -> float:
    """The same exchange on the project's own codec (``overlay/h2/codec``): what a link costs
    with the engine links use by default (``[limits] link_h2_engine = "lean"``)."""
    from overlay.h2.codec import connection as cn
    from overlay.h2.codec.settings import Settings

    client = cn.Connection(client=True, local=Settings())
    server = cn.Connection(client=False, local=Settings())
    client.initiate()
    server.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    begin = time.process_time()
    for i in range(exchanges):
        stream_id = client.next_stream_id()
        request = [*REQUEST[:-1], (b"isthmus-deadline-ms", b"%d" % (30_000 - i % 1000))]
        client.send_headers(stream_id, request, end_stream=True)
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, cn.RequestReceived):
                server.send_headers(event.stream_id, RESPONSE, end_stream=False)
                server.send_data(event.stream_id, BODY, end_stream=True)
        for event in client.receive_data(server.data_to_send()):
            if isinstance(event, cn.DataReceived):
                client.credit_connection(event.flow_length)
        server.receive_data(client.data_to_send())  # WINDOW_UPDATEs
        server.data_to_send()
    return (time.process_time() - begin) / exchanges * 1e6


if __name__ == "__main__":
    print(f"h2 codec: {h2_exchange_cpu_us():.1f} us of CPU per exchange (both peers)")
    print(f"lean codec: {lean_exchange_cpu_us():.1f} us of CPU per exchange (both peers)")
