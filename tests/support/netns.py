"""Network namespaces as cluster nodes, joined by veth pairs; addresses exist only inside them."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into the named network namespace: sockets it opens and children
    it starts from now on live there (a process with one thread moves as a whole)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def in_netns(name: str, make: Callable[[], T]) -> T:
    """`make()` run in a thread of its own inside the named namespace (the caller's stays where
    it is). A socket made there stays in that namespace whichever thread uses it later."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(name)
            result.append(make())
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            failure.append(error)
    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def connect_in(name: str, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection made from inside the named namespace."""
    return in_netns(name, lambda: socket.create_connection(address, timeout=timeout))


@dataclass
class Node:
    name: str          # the namespace
    iface: str         # its end of the veth
    address: str       # its address inside the namespace

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.exec_prefix, *argv], capture_output=True, text=True,
                              timeout=timeout)


@dataclass
class VethPair:
    """Two namespaces joined by one veth: a. and b., on 10.213.<subnet>.0/24."""

    subnet: int = 0
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    a: Node = field(init=False)
    b: Node = field(init=False)

    def __post_init__(self) -> None:
        self.a = Node(f"shark-a{self.tag}", f"sa{self.tag}", f"10.213.{self.subnet}.1")
        self.b = Node(f"shark-b{self.tag}", f"sb{self.tag}", f"10.213.{self.subnet}.2")

    def __enter__(self) -> VethPair:
        self.close()
        try:
            for node in (self.a, self.b):
                ip("netns", "add", node.name)
                ip("-n", node.name, "link", "set", "lo", "up")
            ip("link", "add", self.a.iface, "type", "veth", "peer", "name", self.b.iface)
            for node in (self.a, self.b):
                ip("link", "set", node.iface, "netns", node.name)
                ip("-n", node.name, "addr", "add", f"{node.address}/24", "dev", node.iface)
                ip("-n", node.name, "link", "set", node.iface, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", node.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.a.iface], capture_output=True)
