"""Fixtures of the image tests (support/podman.py has the machinery)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from support.podman import Forwards, Images, podman_problem


@pytest.fixture(scope="session")
def podman_ready() -> None:
    if problem := podman_problem():
        pytest.skip(problem)


@pytest.fixture(scope="session")
def images(podman_ready: None) -> Iterator[Images]:
    """`make image` and `make image-tls`, each built when a test first asks for it."""
    built = Images()
    yield built
    built.remove()
    for variant, seconds in built.seconds.items():
        print(f"\nmake {'image-tls' if variant == 'tls' else 'image'}: {seconds:.1f} s", file=sys.stderr)


@pytest.fixture
def forwards() -> Iterator[Forwards]:
    opened = Forwards()
    yield opened
    opened.close()
