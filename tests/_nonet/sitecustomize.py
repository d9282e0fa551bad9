"""Put on PYTHONPATH of test subprocesses: any attempt to open a network connection raises."""

import socket

_real_connect = socket.socket.connect


def _guarded_connect(self, address):  # noqa: ANN001
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    raise OSError(f"network access blocked in tests (tried to connect to {address!r})")


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect
_real_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
    if host in (None, "localhost", "127.0.0.1", "::1"):
        return _real_getaddrinfo(host, *args, **kwargs)
    raise OSError(f"network access blocked in tests (tried to resolve {host!r})")


socket.getaddrinfo = _guarded_getaddrinfo
