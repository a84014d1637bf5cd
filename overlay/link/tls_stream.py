"""``TLSStream``: TLS over any trio stream that decrypts every buffered record per receive.

Why not :class:`trio.SSLStream`: its ``receive_some`` returns one TLS record (at most 16 KiB of
plaintext) per call, so a link moving bulk data pays a full trio scheduler pass for each 16 KiB.
This stream reads the transport in large pieces and hands back everything already decrypted.

Theory of operation
-------------------
One :class:`ssl.SSLObject` sits between two :class:`ssl.MemoryBIO`\\ s: ``_incoming`` holds
ciphertext read from the transport, ``_outgoing`` the ciphertext OpenSSL produced.  The SSL
object itself never blocks; the only awaits are on the transport:

* **receive** (one task at a time): call ``SSLObject.read`` until it wants more input, up to
  ``max_bytes`` of plaintext (records are at most 16 KiB, so each read asks for at most that).
  If that produced nothing, read the transport once (``read_size`` bytes, fixed) into
  ``_incoming`` and try again.  ``_incoming`` is only refilled when no complete record is left,
  so it never holds more than ``read_size`` plus one partial record.  A ``close_notify``
  reads as ``b""``; a transport EOF without one (a *ragged* EOF) raises
  ``BrokenResourceError``, after any plaintext that preceded it was returned.
* **send** (one task at a time): ``SSLObject.write`` at most :data:`WRITE_CHUNK` bytes of
  plaintext, then flush ``_outgoing``; repeat.  The ciphertext waiting to be sent is bounded by
  one chunk plus record overhead.
* **flush** - the one rule that keeps records in order: ``_outgoing`` is drained only by the
  holder of ``_send_lock``, and the holder keeps draining and sending until ``_outgoing`` is
  empty before it lets go.  A read can also produce output (a TLS 1.3 KeyUpdate answer);
  the receiver flushes it itself if the lock is free, and otherwise leaves it for the holder,
  who will find it before releasing.  So a receive never waits behind a blocked send.
* **handshake**: ``do_handshake`` drives ``SSLObject.do_handshake`` the same way (flush, then
  read when it wants input).  A TLS 1.3 *server* keeps whatever its last handshake step
  produced (session tickets, if enabled) in ``_outgoing`` for the next send (or a read that
  produces output of its own), as trio does: sending it before the client reads can deadlock
  lock-step transports.  On an ``SSLError`` the alert OpenSSL produced is *not* sent (as in
  trio.SSLStream): the owner logs why it rejected the peer and then closes, and the peer
  seeing the close only after that log line is an order operators and tests rely on.
* **checkpoints**: every call is a trio checkpoint, normally exactly one: the transport's
  receive or send is it when there is one; an uncontended send lock is taken synchronously;
  plaintext already buffered is returned after a bare checkpoint.  Each extra yield would be
  one more scheduler pass (an epoll and a reschedule) per call on a busy link.
* **state**: OK -> BROKEN on any ``SSLError`` (kept as ``__cause__`` of every later
  ``BrokenResourceError``), on a transport failure, or when a send or the handshake is
  cancelled part-way (an unknown amount of ciphertext left); -> CLOSED on :meth:`aclose`.

Transport errors (``BrokenResourceError``/``ClosedResourceError``, e.g. a revoked link whose
socket was closed) propagate unchanged, as trio.SSLStream's do.
"""

from __future__ import annotations

import enum
import ssl
from typing import Generic, TypeVar

import trio

__all__ = ["CIPHERTEXT_READ_SIZE", "WRITE_CHUNK", "TLSStream"]

KIB = 1024
CIPHERTEXT_READ_SIZE = 256 * KIB  # ciphertext asked of the transport per read
WRITE_CHUNK = 256 * KIB  # plaintext encrypted per flush; bounds the outgoing ciphertext
_RECORD = 16 * KIB  # TLS plaintext record limit: one SSLObject.read yields at most this

T_Stream = TypeVar("T_Stream", bound=trio.abc.Stream)


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class TLSStream(trio.abc.Stream, Generic[T_Stream]):
    """TLS client or server over ``transport``; see the module docstring."""

    def __init__(
        self,
        transport: T_Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        read_size: int = CIPHERTEXT_READ_SIZE,
    ) -> None:
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self.transport_stream: T_Stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._read_size = read_size
        self._state = _State.OK
        self._cause: BaseException | None = None
        self._handshook = False
        self._handshake_lock = trio.Lock()
        self._send_lock = trio.StrictFIFOLock()
        self._receiving = False
        self._sending = False
        self._eof = False

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The TLS session: peer certificates, ALPN, version (valid after the handshake)."""
        return self._ssl

    # The SSLObject queries trio.SSLStream forwards and our callers use, spelled out.

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    @property
    def session_reused(self) -> bool:
        return self._ssl.session_reused

    # -- state ----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError("the TLS stream is broken") from self._cause

    def _broken(self, exc: BaseException) -> trio.BrokenResourceError:
        if self._state is _State.OK:
            self._state = _State.BROKEN
            self._cause = exc
        err = trio.BrokenResourceError(f"TLS failed: {exc!r}")
        err.__cause__ = exc
        return err

    # -- transport ------------------------------------------------------------------------

    async def _fill(self) -> None:
        """Read the transport once into ``_incoming`` (EOF becomes the BIO's EOF)."""
        try:
            data = await self.transport_stream.receive_some(self._read_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._state is _State.CLOSED:
                raise trio.ClosedResourceError("the TLS stream was closed") from exc
            self._broken(exc)
            raise
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _flush(self) -> None:
        """Send everything in ``_outgoing``, in order; see "flush" in the module docstring.

        An uncontended lock is taken synchronously: ``async with`` would cost a scheduler pass
        per send on top of the transport's own checkpoint.
        """
        if self._send_lock.locked():
            await self._send_lock.acquire()
        else:
            self._send_lock.acquire_nowait()
        try:
            if self._outgoing.pending:
                await self._drain_locked()
            else:  # another holder sent our records: still a checkpoint, as trio promises
                await trio.lowlevel.checkpoint()
        finally:
            self._send_lock.release()

    async def _drain_locked(self) -> None:
        try:
            while self._outgoing.pending:
                await self.transport_stream.send_all(self._outgoing.read())
        except BaseException as exc:  # re-raised: the peer saw an unknown prefix of the data
            if self._state is _State.OK:
                self._state = _State.BROKEN
                self._cause = (
                    exc
                    if isinstance(exc, Exception)
                    else trio.BrokenResourceError("a send was cancelled part-way")
                )
            raise

    async def _flush_from_reader(self) -> None:
        """Flush output a read produced, unless a sender holds the lock (it will flush it)."""
        if self._send_lock.locked():
            return
        self._send_lock.acquire_nowait()  # synchronously: nobody can slip in before us
        try:
            await self._drain_locked()
        finally:
            self._send_lock.release()

    # -- handshake ------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the TLS handshake (idempotent).  Callers bound it with a timeout.

        Raises ``BrokenResourceError`` with the ``ssl.SSLError`` (e.g.
        ``SSLCertVerificationError``) as ``__cause__``; the stream is then unusable.
        """
        self._check()
        async with self._handshake_lock:
            self._check()
            if self._handshook:
                return
            try:
                await self._handshake_steps()
            finally:
                if not self._handshook and self._state is _State.OK:
                    self._state = _State.BROKEN  # cancelled part-way
                    self._cause = trio.BrokenResourceError("the TLS handshake was interrupted")

    async def _handshake_steps(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                raise self._broken(exc) from exc  # no alert: see "handshake" above
            else:
                self._handshook = True
                if not (self._ssl.server_side and self._ssl.version() == "TLSv1.3"):
                    await self._flush()
                return
            await self._flush()
            await self._fill()

    async def _ensure_handshake(self) -> None:
        if not self._handshook:
            await self.do_handshake()

    # -- receive --------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Plaintext of every complete record already buffered, at most ``max_bytes``.

        Waits for the transport only when no complete record is buffered.  ``b""`` after the
        peer's ``close_notify``; ``BrokenResourceError`` on a ragged EOF or a TLS error.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            return await self._receive(max_bytes)
        finally:
            self._receiving = False

    async def _receive(self, max_bytes: int | None) -> bytes:
        limit = self._read_size if max_bytes is None else max_bytes
        if limit < 1:
            raise ValueError("max_bytes must be >= 1")
        self._check()
        await self._ensure_handshake()
        yielded = False  # a transport read already was this call's checkpoint
        while True:
            if self._eof:
                if not yielded:
                    await trio.lowlevel.checkpoint()
                return b""
            pending = self._outgoing.pending
            data = self._decrypt(limit)
            if self._outgoing.pending > pending and self._state is _State.OK:  # a KeyUpdate answer
                try:
                    await self._flush_from_reader()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if not data:
                        raise  # else: return the plaintext; the next call raises
            if data:
                if not yielded:
                    await trio.lowlevel.checkpoint()
                return data
            self._check()  # a TLS error with nothing before it
            if self._eof:
                continue
            await self._fill()
            yielded = True

    def _decrypt(self, limit: int) -> bytes:
        """Every complete record's plaintext now in ``_incoming``, at most ``limit`` bytes.

        An ``SSLError`` after some plaintext breaks the stream but returns that plaintext
        first; the next call raises.
        """
        chunks: list[bytes] = []
        total = 0
        try:
            while total < limit:
                chunk = self._ssl.read(min(limit - total, _RECORD))
                if not chunk:  # close_notify
                    self._eof = True
                    break
                chunks.append(chunk)
                total += len(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self._broken(exc)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    # -- send -----------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it; a cancelled send leaves the stream broken."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check()
            await self._ensure_handshake()
            if not data:
                await trio.lowlevel.checkpoint()
                return
            view = memoryview(data).cast("B")
            for start in range(0, len(view), WRITE_CHUNK):
                self._check()
                try:
                    self._ssl.write(view[start : start + WRITE_CHUNK])
                except ssl.SSLError as exc:
                    raise self._broken(exc) from exc
                try:
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if self._state is _State.CLOSED:
                        raise trio.ClosedResourceError("the TLS stream was closed") from None
                    raise
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    # -- close ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send ``close_notify`` best-effort (never waiting for the peer's), close the transport.

        Idempotent.  Skips ``close_notify`` when the stream is broken, the handshake never
        finished, or another task is in the middle of a send.
        """
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        polite = self._state is _State.OK and self._handshook
        self._state = _State.CLOSED
        try:
            if polite:
                await self._send_close_notify()
        finally:
            await trio.aclose_forcefully(self.transport_stream)

    async def _send_close_notify(self) -> None:
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not arrived: we do not wait for it
        except ssl.SSLError:
            return
        if self._send_lock.locked():
            return
        self._send_lock.acquire_nowait()
        try:
            await self._drain_locked()  # state is CLOSED already: a failure changes nothing
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer may have closed first: legal, nothing to tell it
        finally:
            self._send_lock.release()
