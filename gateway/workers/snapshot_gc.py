"""The cyclic GC around the snapshot messages a worker applies.

Why: a worker's catalog and import table are hundreds of thousands of long-lived, acyclic
objects (entries, endpoints, persistent-map nodes).  Whatever a change brings in lands in the
youngest generation, and CPython's collector walks it there, again when it is promoted, and in
every full pass until something freezes it.  Under a Consul churn (changes every few tens of
milliseconds) those walks were the longest steps a worker made: young passes of 5-27 ms and
full ones of 4-25 ms inside the step that applied a small delta or served a request
(``scripts/bench_stall.py --workers 2 --split``); with this policy no worker GC pass in the
benchmark's phases is over 4 ms (30-45 ms before, same hour).

Policy, per message from the supervisor:

1. :func:`before_frame` (the channel's hook, before the frame is unpickled): unless a change
   is already under way, collect the youngest generation and turn the collector off.  That is
   where the requests' cyclic garbage since the last change is (a freeze resets the count
   that starts young passes, so under churn few run between two changes), and it is small.  A
   full collection here walked whatever survived since the last freeze on every frame, stats
   requests included: 0.4 s of the workers' CPU in one benchmark run, where all their passes
   together took 0.26 s before this policy and 0.02 s with it but no collection.
2. The message is unpickled and applied with the collector off: nothing walks the new objects.
3. When the change is complete (a single message, or the last of a change in several),
   :func:`apply_snapshot` freezes the heap -- ``gc.freeze()`` splices the generations' lists
   onto the permanent one, whatever their length -- and turns the collector on again.  A
   message that is not a snapshot turns it on again at once (:func:`after_other`).

What it costs: objects alive at a freeze and later part of a garbage *cycle* are never
collected.  Step 1 collects the young garbage first; what escapes it is garbage already
promoted to an older generation, and what the requests leave between the messages of a change
in several.  The gateway makes little cyclic garbage: every collection of both workers in one
``bench_stall.py`` run (about 5 minutes under load, before this policy) found 1 314 objects
in all.  The catalog's own values hold no cycles: a frozen value a later change replaces is
freed by its reference count.
"""

from __future__ import annotations

import gc

from gateway.workers.snapshot_receiver import Change, NeedResync, SnapshotReceiver


def before_frame(_size: int) -> None:
    """The channel's hook before any frame is unpickled (step 1 of the module doc)."""
    if gc.isenabled():  # off: the parts of a change are arriving, nothing to collect yet
        gc.collect(0)
        gc.disable()


def completes(message: object) -> bool:
    """Whether ``message`` completes a change (the last or only message of one)."""
    return bool(getattr(message, "final", True))


def apply_snapshot(receiver: SnapshotReceiver, message: object) -> Change | NeedResync:
    """Apply one snapshot message with the collector off, and freeze what the worker holds
    when it completes a change (steps 2 and 3 of the module doc).

    A gap (:class:`NeedResync`) drops the change under way: the collector runs again until
    the resent snapshot's first message.
    """
    gc.disable()
    change = receiver.apply(message)
    if isinstance(change, NeedResync):
        gc.enable()
    elif completes(message):
        gc.freeze()
        gc.enable()
    return change


def after_other(changing: bool) -> None:
    """After a message that is not a snapshot: the collector on again, unless a change in
    several messages is under way (``changing``)."""
    if not changing:
        gc.enable()
