"""The processes a benchmark run starts: started as children, stopped by PID, CPU read from /proc.

Every server of the benchmark (nginx, iperf3, HAProxy, the Isthmus gateways) is a child of
this process started through :func:`gateway.demo.runner.start_child`; :class:`Fleet` remembers
each one and stops them all (SIGTERM, then SIGKILL after a grace) when its ``async with`` block
ends -- normally, on an error or on Ctrl-C.  Nothing is ever stopped by name.

CPU time is what makes figures from these shared 2-core machines comparable: a proxy's
``utime + stime`` (``/proc/<pid>/stat``, all threads, plus any live descendant processes)
before and after a load run gives the CPU seconds it spent on that run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType

import trio

from gateway.demo.runner import Child, start_child, stop_child

CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_WAIT_S = 20.0


class BenchError(Exception):
    """The benchmark cannot go on (a tool is missing, a server did not start, ...)."""


def need_tools(tools: dict[str, str]) -> None:
    """Install missing Debian packages (``tool -> package``) when root, else say how to."""
    missing = {t: p for t, p in tools.items() if shutil.which(t) is None}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    command = "apt-get update && apt-get install -y " + " ".join(packages)
    if os.geteuid() != 0:
        raise BenchError(f"missing {', '.join(sorted(missing))}; run as root: {command}")
    print(f"installing {' '.join(packages)} ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    still = [t for t in missing if shutil.which(t) is None]
    if still:
        raise BenchError(f"still missing after install: {', '.join(still)}")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _descendants(root: int) -> list[int]:
    """``root`` and every live process below it (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo and len(found) < 10_000:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a gateway supervisor's: its workers)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` alone (None: it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` and their live descendants."""
    total = 0.0
    for root in pids:
        for pid in _descendants(root):
            total += process_cpu_seconds(pid) or 0.0
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process): beside a
    process's own figure it shows when a phase asks more than the machine has, so that its
    latencies measure the machine's queue rather than the process."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def rss_mb(pid: int) -> float:
    """``pid``'s resident set size in MB (NaN when /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin_threads(pids: list[int], cpus: set[int]) -> None:
    """Pin every thread of ``pids`` (processes this bench started) to ``cpus``."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:
                continue


async def wait_port(
    host: str, port: int, *, within_s: float = PORT_WAIT_S, fleet: Fleet | None = None
) -> None:
    """Return once ``host:port`` accepts a TCP connection; BenchError after ``within_s``.

    With ``fleet``, a child that died meanwhile fails the wait at once, quoting its log.
    """
    last: Exception | None = None
    with trio.move_on_after(within_s):
        while True:
            if fleet is not None:
                fleet.check_alive()
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                last = exc
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return
    raise BenchError(f"{host}:{port} did not accept connections within {within_s}s ({last})")


@dataclass
class Fleet:
    """Every process this run started; stops them all on exit, by PID."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    async def start(self, name: str, argv: list[str]) -> Child:
        child = await start_child(name, argv, self.log_dir / f"{name}.log")
        self.children.append(child)
        return child

    async def check_config(self, argv: list[str]) -> None:
        """Run a short checking command (``haproxy -c``); BenchError with its output if it fails."""
        with trio.fail_after(30):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode("utf-8", "replace")[-3000:]
            raise BenchError(f"{' '.join(argv)} failed (status {done.returncode}):\n{out}")

    def check_alive(self) -> None:
        """BenchError quoting the log of the first child that exited on its own."""
        for child in self.children:
            if child.process.returncode is not None:
                text = child.log_path.read_text("utf-8", "replace").splitlines()[-8:]
                raise BenchError(
                    f"{child.name} (pid {child.process.pid}) exited with status "
                    f"{child.process.returncode}; end of {child.log_path}:\n  " + "\n  ".join(text)
                )

    async def stop(self, child: Child) -> None:
        with trio.CancelScope(shield=True):
            await stop_child(child, grace=3.0)
        if child in self.children:
            self.children.remove(child)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for child in list(self.children):
                    nursery.start_soon(partial(stop_child, child, grace=3.0))
        self.children.clear()
