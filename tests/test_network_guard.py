import socket

import pytest

from tests.conftest import NetworkAccessForbidden


def test_connections_beyond_loopback_fail_the_test():
    with pytest.raises(NetworkAccessForbidden):
        socket.create_connection(("203.0.113.10", 443), timeout=1)
    with socket.socket() as sock, pytest.raises(NetworkAccessForbidden):
        sock.connect(("198.51.100.7", 80))


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    finally:
        server.close()
