"""The frame reader copies a bulk link's payload bytes once, whatever the split of the reads.

Why: a 64 KiB DATA frame arriving in 256 KiB TLS reads spans two reads in one read of four.
Joining the rest of a read with all of the next one before cutting the frame copied most
payload bytes two or three times.  Measured here by memory, not time: while the frames of a
read are taken, the reader allocates no more than the payloads it hands out (tracemalloc's
peak), and a payload that spans reads is still exactly its bytes.
"""

from __future__ import annotations

import tracemalloc

from overlay.h2.codec import frames as fr

FRAME = 64 * 1024
READ = 256 * 1024


def test_a_frame_spanning_reads_is_joined_alone_not_with_the_reads_after_it() -> None:
    payloads = [bytes([i]) * FRAME for i in range(12)]
    wire = b"".join(fr.data_frame(1, p) for p in payloads)
    reads = [wire[i : i + READ] for i in range(0, len(wire), READ)]
    reader = fr.FrameReader(max_frame_size=FRAME)
    got: list[bytes] = []
    tracemalloc.start()
    try:
        for data in reads:
            reader.receive_data(data)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            peak = 0
            while (frame := reader.next_frame()) is not None:
                assert isinstance(frame, fr.DataFrame)
                got.append(frame.data)
                # Each payload is one allocation of its size; nothing the size of a read.
                peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
            assert peak < FRAME + 16 * 1024, f"{peak} bytes allocated for one frame"
    finally:
        tracemalloc.stop()
    assert got == payloads
    assert reader.buffered == 0


def test_a_header_spanning_reads_is_read_whole() -> None:
    wire = fr.data_frame(3, b"a" * 100) + fr.data_frame(5, b"b" * 50, end_stream=True)
    reader = fr.FrameReader()
    frames: list[fr.Frame] = []
    for cut in (105, 4, 1, 1):  # the second header arrives in three pieces
        reader.receive_data(wire[:cut])
        wire = wire[cut:]
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    reader.receive_data(wire)
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    assert frames == [
        fr.DataFrame(3, b"a" * 100, False, 100),
        fr.DataFrame(5, b"b" * 50, True, 50),
    ]
