"""A gRPC server interceptor that counts the response-streaming calls open now, per method
(agents' HWP streams, log and job subscriptions), for the `hodei_grpc_streams_open` gauge.

The method label is the full method name (`/hodei.v1.WorkerService/Connect`): a set fixed
by the services registered, so bounded. Unary calls pass through untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc


class StreamCounter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        method: str = details.method
        self.open.setdefault(method, 0)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._counted(method, handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            self._counted(method, handler.unary_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _counted(self, method: str, behavior: Callable[..., Any]) -> Any:
        """The behavior, counted while it runs, in the form grpcio expects: a coroutine
        function when the servicer writes through its context, else an async generator."""
        counts = self.open
        if inspect.iscoroutinefunction(behavior):

            async def coroutine(request: Any, context: Any) -> None:
                counts[method] += 1
                try:
                    await behavior(request, context)
                finally:
                    counts[method] -= 1

            return coroutine

        async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
            counts[method] += 1
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                counts[method] -= 1

        return generator
