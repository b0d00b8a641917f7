"""The log handler of the workers (observability.logs.LineWriter): info lines leave the event
loop's thread and arrive whole and in order, warnings at once; info lines never block the logger
when stderr is stuck; at the end every line is written as it is logged."""

from __future__ import annotations

import io
import logging
import threading
import time

from switchyard.observability.logs import PLAIN, LineWriter


class SlowStream(io.StringIO):
    """A stderr whose writes can be held up (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()
        self.writes = 0

    def write(self, s: str) -> int:
        self.open.wait()
        self.writes += 1
        return super().write(s)


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter(PLAIN))
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def _eventually(check, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not written"
        time.sleep(0.01)


def test_lines_are_written_by_the_writer_thread_in_order_and_in_few_writes() -> None:
    stream = SlowStream()
    handler = LineWriter(stream, interval=0.05)
    log = _logger(handler, "test.order")
    for i in range(500):
        log.info("line %d", i)
    assert stream.writes < 500
    _eventually(lambda: stream.getvalue().count("\n") == 500)
    lines = stream.getvalue().splitlines()
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(500))
    assert stream.writes < 50  # batched, not one write a line
    handler.close()


def test_a_warning_is_written_at_once_after_what_is_queued() -> None:
    stream = SlowStream()
    handler = LineWriter(stream, interval=3600)  # the thread never gets to it
    log = _logger(handler, "test.urgent")
    log.info("before")
    assert stream.getvalue() == ""
    log.warning("the upstream is down")
    assert [line.rsplit(": ", 1)[1] for line in stream.getvalue().splitlines()] == ["before", "the upstream is down"]
    handler.close()


def test_a_stuck_stderr_drops_info_lines_and_says_how_many() -> None:
    stream = SlowStream()
    stream.open.clear()
    handler = LineWriter(stream, interval=0.01, max_pending=10_000)
    log = _logger(handler, "test.stuck")
    started = time.monotonic()
    for i in range(2_000):
        log.info("request %04d %s", i, "x" * 50)  # about 130 KB: far past the bound
    assert time.monotonic() - started < 10  # the logger never waited for the stream
    stream.open.set()
    log.error("kept although stuck")
    text = stream.getvalue()
    assert "log lines dropped" in text
    # Each write counts the lines dropped since the one before.
    dropped = sum(int(part.split(" ", 1)[0]) for part in text.split("(switchyard: ")[1:])
    kept = text.count(" request ")
    assert dropped > 0 and kept + dropped == 2_000
    handler.close()


def test_at_once_writes_each_line_as_it_is_logged() -> None:
    stream = SlowStream()
    handler = LineWriter(stream, interval=3600)
    log = _logger(handler, "test.end")
    log.info("queued")
    handler.at_once = True
    log.info("Finished server process")
    # Written before the call returned, after what was queued; no writer thread involved.
    assert [line.rsplit(": ", 1)[1] for line in stream.getvalue().splitlines()] == ["queued", "Finished server process"]
    handler.close()
