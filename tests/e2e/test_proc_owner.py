"""The /proc look-up the worker tests use to tell which process opened a connection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.e2e.proc_owner import alive, children_of, connection_owner

CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_the_process_that_dialed_is_found_not_the_one_that_accepted() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "connected\n"
        conn, peer = server.accept()
        me = conn.getsockname()
        # Both processes hold an end of the connection; only the child holds the dialing one.
        assert connection_owner(peer, me, [os.getpid(), child.pid]) == child.pid
        assert connection_owner(peer, me, [os.getpid()]) is None
        assert child.pid in children_of(os.getpid())
        assert alive(child.pid)
        conn.close()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        server.close()
    assert not alive(child.pid)
