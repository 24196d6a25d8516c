"""A gRPC server interceptor that turns undecodable requests into INVALID_ARGUMENT.

grpcio decodes a request before the servicer runs; garbage bytes would end the call with
UNKNOWN and a traceback in the log. Here every request deserializer is wrapped so that a decode
failure yields a `Malformed` marker instead, and the call is ended with INVALID_ARGUMENT and a
clear message (for streams, when the servicer reads that message), with one warning line.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

Context = Any  # grpc.aio.ServicerContext: grpcio ships no type information


class Malformed:
    """What a request that could not be decoded becomes."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error

    def message(self) -> str:
        return f"malformed request: cannot decode the protobuf message ({self.error})"


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, and whatever else a parser raises
            return Malformed(str(exc)[:200])

    return parse


async def _refuse(context: Context, bad: Malformed) -> None:
    log.warning("refused a malformed request from %s: %s", context.peer(), bad.error)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message())


class _GuardedContext:
    """The servicer's context, with read() refusing a Malformed message."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if isinstance(message, Malformed):
            await _refuse(self._context, message)
        return message


async def _guard_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for message in requests:
        if isinstance(message, Malformed):
            await _refuse(context, message)
        yield message


async def _maybe_await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _streaming(behavior: Callable[..., Any], guard: Callable[..., tuple[Any, ...]]) -> Any:
    """Wrap a response-streaming behavior as grpcio expects it: a coroutine function when the
    servicer writes through its context, else an async generator function."""
    if inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: Context) -> None:
            args = guard(request, context)
            if args:
                await behavior(*args)

        return coroutine

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        args = guard(request, context)
        if args:
            async for response in behavior(*args):
                yield response

    return generator


def _guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    deserializer = handler.request_deserializer
    if deserializer is None:
        return handler
    safe, out = _safe(deserializer), handler.response_serializer

    def stream_args(requests: Any, context: Context) -> tuple[Any, ...]:
        return _guard_stream(requests, context), _GuardedContext(context)

    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            if isinstance(request, Malformed):
                await _refuse(context, request)
            return await _maybe_await(unary(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, safe, out)
    if handler.stream_unary is not None:
        gather = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            return await _maybe_await(gather(*stream_args(requests, context)))

        return grpc.stream_unary_rpc_method_handler(stream_unary, safe, out)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_unary_stream(handler.unary_stream), safe, out
        )
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, stream_args), safe, out
    )


def _guard_unary_stream(behavior: Callable[..., Any]) -> Any:
    """A unary request is decoded before the call: refuse it before the servicer runs."""
    inner = _streaming(behavior, lambda request, context: (request, context))
    if inspect.iscoroutinefunction(behavior):

        async def coroutine(request: Any, context: Context) -> None:
            if isinstance(request, Malformed):
                await _refuse(context, request)
            await inner(request, context)

        return coroutine

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await _refuse(context, request)
        async for response in inner(request, context):
            yield response

    return generator


class MalformedGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return None if handler is None else _guard(handler)
