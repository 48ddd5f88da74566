"""When a request reached this machine, as opposed to when the server got round to reading it.

A server process that is behind leaves new connections in the kernel's accept queue and their bytes in socket
buffers, where no queue bound or deadline of its own sees them. Linux keeps, for each TCP connection, the time
since it last received data (`tcpi_last_data_recv` of `TCP_INFO`, in milliseconds); read as the request's head
is parsed, it is how long the request waited before the server read it.

The server's protocol (app.transport.http.limits) stamps each request with its `arrival_time`, under
`RECEIVED_AT` in the ASGI scope's `state`; the request's deadline and the overload refusal count from it
(app.transport.http.deadlines), and the intake's read delay (app.intake_load) is measured from it.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

RECEIVED_AT = "received_at"  # the key of the arrival time in the ASGI scope's `state`

# struct tcp_info (linux/tcp.h): eight one-byte fields, nine 32-bit counters, then tcpi_last_data_sent,
# tcpi_last_ack_sent and tcpi_last_data_recv, in milliseconds.
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux only
_LAST_DATA_RECV = struct.Struct("=I")
_LAST_DATA_RECV_OFFSET = 8 + 9 * 4 + 2 * 4
_TCP_INFO_READ = _LAST_DATA_RECV_OFFSET + _LAST_DATA_RECV.size


def kernel_wait_s(sock: Any) -> float:
    """Seconds since the kernel last received data on TCP socket `sock`; 0.0 when it cannot tell (not Linux,
    not TCP, or no socket)."""
    if _TCP_INFO is None or sock is None:
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_READ)
    except OSError:  # a Unix socket, or one already closed
        return 0.0
    if len(info) < _TCP_INFO_READ:
        return 0.0
    return float(_LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_OFFSET)[0]) / 1000


def arrival_time(sock: Any) -> float:
    """The `time.perf_counter()` value at which the data now being read on `sock` reached the machine."""
    return time.perf_counter() - kernel_wait_s(sock)

