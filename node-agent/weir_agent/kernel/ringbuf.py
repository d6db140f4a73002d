"""Reading a BPF ring buffer map straight from its memory, a batch at a time.

The kernel lays a ring buffer out as a consumer page (the reader's position,
writable), a producer page (the writer's position, read-only) and the data pages,
mapped twice in a row so a range that wraps is still one contiguous slice. Each
record is an 8-byte header (length with a BUSY and a DISCARD bit, page offset)
and the record, padded to 8 bytes. weir's programs post records of one size per
program, so the committed records from the consumer position on are a run of
fixed-stride rows: their headers are read first (one strided read), the run up
to the first one still being written is copied out whole, and the consumer
position is advanced past it. Decoding happens elsewhere, outside any lock.

The ring buffer's file descriptor is also what ``epoll`` waits on: the programs
submit with the kernel's adaptive wakeup (a wakeup only when the reader had
caught up), so a reader that drains everything and then waits gets one wakeup
per batch, not one per event.
"""

from __future__ import annotations

import mmap
import os
import select

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
PAGE = os.sysconf("SC_PAGE_SIZE")


def record_stride(size: int) -> int:
    """Bytes one record of ``size`` takes in the ring (header and padding included)."""
    return (HEADER + size + 7) & ~7


class RingReader:
    """The committed records of one ring buffer map, as contiguous bytes."""

    def __init__(self, map_fd: int, *, size: int, record_size: int) -> None:
        if size <= 0 or size & (size - 1) or size % PAGE:
            raise ValueError(f"ring buffer of {size} bytes: not a power of two of pages")
        self.fd = map_fd
        self.size = size
        self.mask = size - 1
        self.record_size = record_size
        self.stride = record_stride(record_size)
        self._consumer = mmap.mmap(map_fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(
            map_fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE
        )
        self._data = memoryview(self._producer)[PAGE:]
        # The positions as one aligned 64-bit word each: loads and stores of a whole word
        # (struct's byte-at-a-time packing could tear them, and a torn consumer position
        # makes the kernel see a full ring).
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")

    def positions(self) -> tuple[int, int]:
        """(consumer, producer) positions: bytes ever read and ever reserved."""
        return self._consumer_pos[0], self._producer_pos[0]

    def read(self, *, copy: bool = True) -> tuple[bytes, int]:
        """Take every committed record up to the first one still being written:
        (their bytes, headers included, and how many). ``copy=False`` skips them
        without copying (a reader with nowhere to put them)."""
        consumer, producer = self.positions()
        pending = producer - consumer
        if pending <= 0:
            return b"", 0
        start = consumer & self.mask
        count = pending // self.stride
        # Each header's length word, first: a record is complete once its header says so
        # (the kernel releases the header after writing the record); loads stay in order.
        lengths = self._data[start : start + count * self.stride].cast("I")[:: self.stride // 4]
        done = 0
        for length in lengths.tolist():
            if length & BUSY:
                break
            if length & ~DISCARD != self.record_size:
                raise RuntimeError(
                    f"a ring buffer record of {length & ~(BUSY | DISCARD)} bytes where the "
                    f"program's layout has {self.record_size}: abi.event_type and weir.h disagree"
                )
            done += 1
        if not done:
            return b"", 0
        data = bytes(self._data[start : start + done * self.stride]) if copy else b""
        self._consumer_pos[0] = consumer + done * self.stride
        return data, done

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._data.release()
        self._producer.close()
        self._consumer.close()


class Waiter:
    """Waits until any ring buffer added has records (epoll on their fds). A ring
    buffer leaves the set by itself when its map's file is released (its reader
    closed, its fd closed); an fd number reused by a later ring is registered anew."""

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def add(self, fd: int) -> None:
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except FileExistsError:
            self._epoll.modify(fd, select.EPOLLIN)

    def wait(self, timeout: float) -> bool:
        """True when a ring buffer has records (or may have: a wakeup arrived)."""
        try:
            return bool(self._epoll.poll(timeout))
        except InterruptedError:
            return True

    def close(self) -> None:
        self._epoll.close()
