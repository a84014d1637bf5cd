"""Typed errors of the HTTP/2 codec: what a peer's bytes did wrong, and the code to answer with.

Why a subtree of its own under the root rather than under Downstream/Upstream: the codec does
not know which side of the gateway its peer is on (a link is dialled by one gateway and
accepted by the other; the same codec serves both).  The owner of the connection decides who
is at fault; the error says only what was wrong and carries the RFC 9113 error code for the
GOAWAY or RST_STREAM that answers it.
"""

from __future__ import annotations

from foundation.errors import (
    H2_ENHANCE_YOUR_CALM,
    H2_FLOW_CONTROL_ERROR,
    H2_PROTOCOL_ERROR,
    IsthmusError,
)

H2_FRAME_SIZE_ERROR = 0x6
H2_COMPRESSION_ERROR = 0x9
H2_STREAM_CLOSED = 0x5


class CodecError(IsthmusError):
    """The peer's HTTP/2 bytes break RFC 9113 or RFC 7541, or one of our limits."""

    http_status = 400
    h2_error_code = H2_PROTOCOL_ERROR


class HpackError(CodecError):
    """A header block we cannot decode.  Always fatal to the connection (RFC 9113 4.3): the
    HPACK table is shared by every stream and is in an unknown state after a failed block."""

    h2_error_code = H2_COMPRESSION_ERROR


class HpackTruncated(HpackError):
    """The block ends inside a representation (an integer, a string, or its length)."""


class HpackIntegerTooLong(HpackError):
    """An integer encoded in more octets than we accept (RFC 7541 5.1 lets us bound it)."""


class HpackBadHuffman(HpackError):
    """A Huffman string with EOS in it, or padding that is not 0-7 one-bits (RFC 7541 5.2)."""


class HpackBadIndex(HpackError):
    """An index of 0 or past the end of the static and dynamic tables (RFC 7541 2.3.3)."""


class HpackTableSizeError(HpackError):
    """A dynamic table size update above our SETTINGS_HEADER_TABLE_SIZE, or a block that leaves
    the table larger than that setting (the peer did not shrink it after we lowered it)."""


class HpackMisplacedSizeUpdate(HpackError):
    """A dynamic table size update after a field of the block (RFC 7541 4.2: only at its start)."""


class HeaderListTooLarge(HpackError):
    """The decoded header list went past our limit while decoding (an HPACK bomb, or simply
    too many fields).  Decoding stopped there, so the table is unusable: the connection ends."""

    http_status = 431
    h2_error_code = H2_ENHANCE_YOUR_CALM


class StreamClosedError(CodecError):
    """A frame on a stream that is closed and that we did not reset (RFC 9113 5.1)."""

    h2_error_code = H2_STREAM_CLOSED


class FlowControlError(CodecError):
    h2_error_code = H2_FLOW_CONTROL_ERROR


class LocalStreamError(Exception):
    """Our own call was wrong (a stream not open for sending, a stream ID out of order): a bug
    in the owner, not the peer's fault, so not a CodecError."""
