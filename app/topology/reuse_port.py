"""One listening socket per worker process on the same port (`SO_REUSEPORT`), so the kernel spreads new
connections among the workers by their addresses.

uvicorn's supervisor hands every worker the same listening socket. Whichever worker wakes first then accepts
every connection waiting, so connections a client pool opens while another worker is busy all go to the idle
one, and stay there for as long as they live. With a socket of its own per worker, each new connection lands
on a worker chosen by a hash of its addresses, busy or not.

The cost: connections queued on a worker's socket when that worker dies are reset, not taken by another one.
And since any process of the same user may join a port bound this way, the supervisor first checks that the
port is free (`reserve_port`): a second service started on it fails, as it would without `SO_REUSEPORT`.
"""

from __future__ import annotations

import socket
from typing import Any


class ReusePortSocket(socket.socket):
    """A TCP socket bound with `SO_REUSEPORT`. Sent to a worker process (pickled, as uvicorn's supervisor does
    with the sockets it starts workers on), it arrives as a new socket of the worker's own, bound to the same
    address, which the worker's server then listens on."""

    def __reduce__(self) -> tuple[Any, ...]:
        return bind_reuse_port, (self.family, self.getsockname())


def bind_reuse_port(family: socket.AddressFamily, address: tuple[Any, ...]) -> ReusePortSocket:
    """A socket bound to `address` with `SO_REUSEPORT`, not yet listening (a socket that never listens is given
    no connections: the supervisor's own copy only keeps the port reserved while workers come and go)."""
    bound = ReusePortSocket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind(address)
    except OSError:
        bound.close()
        raise
    return bound


def reserve_port(host: str, port: int) -> ReusePortSocket:
    """The supervisor's socket on `host:port`, bound with `SO_REUSEPORT` once a plain bind has shown that no other
    socket holds the address (OSError, e.g. "address already in use", if one does)."""
    family = address_family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    return bind_reuse_port(family, (host, port))


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for a host written with colons, as uvicorn decides it."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET
