"""Logic written once for both clients: a flow is a generator that yields the client
calls it needs, as (method name, keyword arguments), and is sent each result (or thrown
its exception). `run` drives it with a Client, `arun` with an AsyncClient."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")

Step = tuple[str, dict[str, Any]]
Flow = Generator[Step, Any, T]


def run(flow: Flow[T], client: Any) -> T:
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            name, kwargs = flow.throw(error) if error is not None else flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            result, error = getattr(client, name)(**kwargs), None
        except Exception as e:
            result, error = None, e


async def arun(flow: Flow[T], client: Any) -> T:
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            name, kwargs = flow.throw(error) if error is not None else flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            result, error = await getattr(client, name)(**kwargs), None
        except Exception as e:
            result, error = None, e
