"""HTTP/1.1 over any trio Stream: downstream (server role) and upstream (client role).

Theory of operation
-------------------
Each connection keeps its own bounded receive buffer. A message head is read into that buffer
until ``CRLF CRLF`` (never more than ``max_head_bytes``) and validated by the strict parser in
``headers.py``; the body framing is then decided from it once (``h1_body.py``: Content-Length,
chunked, none, or, for a response, close-delimited). A body decoder consumes the body from the
same buffer, one bounded read at a time, so a body is streamed, never buffered whole; what it
leaves after the end of the body is the start of the next message, whose head is validated by
us again before anything acts on it. Consequences:

* pipelined requests are handled strictly one at a time; bytes after a rejected message are
  never parsed, because a rejection closes the connection;
* one parser, ours, decides where a message ends, and the upstream can never disagree with
  it: anything ambiguous (CL+TE, obfuscated chunked, bare CR/LF, obs-fold, NUL, ...) was
  refused in the head, chunked framing is decoded strictly, and the upstream always receives
  a message we re-serialised, never the caller's raw bytes.

What we send is framed by an encoder chosen with the head (``h1_encode.py``), which refuses to
send more or less than a declared Content-Length (``LocalFramingError``). A connection carries
another exchange only when both messages ended cleanly, the request was HTTP/1.1, neither side
said ``Connection: close`` and the response was not close-delimited.

Errors are typed (``errors.py``); ``send_error`` writes the one mapped response
(``error_response``) and marks the connection for closing.

Where the parts live: the buffer, head reader and body pump both roles share are
``h1_connection.py``'s (with ``H1Limits``), the server role is ``h1_server.py``, the client role
``h1_client.py``; this module is the name the rest of the gateway imports them by.
"""

from gateway.http.h1_client import H1ClientConnection
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection

__all__ = ["H1ClientConnection", "H1Limits", "H1ServerConnection"]
