"""The few Kubernetes API calls the provider makes, over kubernetes_asyncio's ApiClient (its
configuration loading: kubeconfig and context, or in-cluster, token refresh, TLS), with
bodies as plain JSON dicts and API errors turned into `KubeError`s that say what was refused.

Only these verbs are used: pods create, delete, list, watch; secrets create, delete, list
(`REQUIRED`, checked at start with SelfSubjectAccessReviews, which every authenticated user may
create). docs/kubernetes.md gives the Role granting exactly these.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client.rest import ApiException

from hodei.errors import ProviderError

REQUIRED = (
    ("create", "pods"),
    ("delete", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "secrets"),
    ("delete", "secrets"),
    ("list", "secrets"),
)
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 240  # the server ends each watch after this long; it is resumed at once


class KubeError(ProviderError):
    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(frozen=True, slots=True)
class Connection:
    kubeconfig: str = ""  # empty: $KUBECONFIG or ~/.kube/config
    context: str = ""
    in_cluster: bool = False


def refused(verb: str, resource: str, namespace: str, status: int, body: str) -> KubeError:
    """An API error as a sentence naming the verb and resource, with the API's own message."""
    try:
        data = json.loads(body)
        message = str(data.get("message") or body)
        reason = str(data.get("reason") or "")
    except (ValueError, AttributeError):
        message, reason = body.strip() or f"HTTP {status}", ""
    if status == 403:
        text = (
            f"kubernetes refused to {verb} {resource} in namespace {namespace}: the server's "
            f"service account lacks the '{verb}' verb on '{resource}' (grant the Role of "
            f"docs/kubernetes.md) [{message}]"
        )
    elif status == 401:
        text = (
            f"kubernetes refused the server's credentials ({message}); check the kubeconfig "
            "or the service account token"
        )
    else:
        text = f"cannot {verb} {resource} in namespace {namespace}: {message}"
    return KubeError(text, status, reason)


class KubeApi:
    """One namespace of one cluster. `open()` first; every call may raise KubeError."""

    def __init__(self, connection: Connection, namespace: str = "") -> None:
        self.connection = connection
        self.namespace = namespace
        self._api: kclient.ApiClient | None = None

    async def open(self) -> None:
        configuration = kclient.Configuration()
        try:
            if self.connection.in_cluster:  # reads the token and CA files: off the loop
                await asyncio.to_thread(
                    kconfig.load_incluster_config, client_configuration=configuration
                )
            else:
                await kconfig.load_kube_config(
                    config_file=self.connection.kubeconfig or None,
                    context=self.connection.context or None,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (kconfig.ConfigException, OSError, ValueError) as exc:
            where = "in-cluster" if self.connection.in_cluster else "kubeconfig"
            raise KubeError(f"cannot load the Kubernetes {where} configuration: {exc}") from None
        if not self.namespace:
            self.namespace = await asyncio.to_thread(self._default_namespace)
        self._api = kclient.ApiClient(configuration)

    def _default_namespace(self) -> str:
        if self.connection.in_cluster and IN_CLUSTER_NAMESPACE.exists():
            return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
        return "default"

    @property
    def host(self) -> str:
        return str(self._api.configuration.host) if self._api else "?"

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        request_timeout: float | None = REQUEST_TIMEOUT_S,
    ) -> aiohttp.ClientResponse:
        if self._api is None:
            raise KubeError("the Kubernetes client is not open")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=request_timeout,
            )
        except ApiException as exc:  # raised by some paths before the request is sent
            raise KubeError(f"kubernetes API error: {exc.reason}", exc.status or 0) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeError(
                f"cannot reach the Kubernetes API at {self.host}: {exc or type(exc).__name__}"
            ) from None
        return response

    async def request(
        self,
        verb: str,
        resource: str,
        method: str,
        name: str = "",
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        *,
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        """One call on a namespaced core resource; the answer's JSON. `missing_ok`: a 404
        answers {} (deleting what is already gone)."""
        path = f"/api/v1/namespaces/{self.namespace}/{resource}" + (f"/{name}" if name else "")
        response = await self._call(method, path, query, body)
        async with response:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise KubeError(f"cannot read the Kubernetes API's answer: {exc}") from None
            if response.status == 404 and missing_ok:
                return {}
            if not 200 <= response.status < 300:
                raise refused(
                    verb, resource, self.namespace, response.status, raw.decode(errors="replace")
                )
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise KubeError(f"the Kubernetes API answered {verb} {resource} with no JSON") from None
        return data if isinstance(data, dict) else {}

    async def list_of(self, resource: str, selector: str) -> dict[str, Any]:
        return await self.request("list", resource, "GET", query={"labelSelector": selector})

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("create", resource, "POST", body=body)

    async def delete(self, resource: str, name: str, grace_s: int | None = None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_s is not None:
            body["gracePeriodSeconds"] = grace_s
        if resource == "secrets":
            body["propagationPolicy"] = "Background"
        await self.request("delete", resource, "DELETE", name, body=body, missing_ok=True)

    async def watch(
        self, resource: str, selector: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events ({"type", "object"}) from `resource_version` on, until the server
        ends the watch; WatchExpired on 410 Gone."""
        path = f"/api/v1/namespaces/{self.namespace}/{resource}"
        query = {
            "watch": "true",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        response = await self._call("GET", path, query, request_timeout=WATCH_TIMEOUT_S + 30)
        async with response:
            if response.status == 410:
                raise WatchExpired()
            if not 200 <= response.status < 300:
                body = (await response.read()).decode(errors="replace")
                raise refused("watch", resource, self.namespace, response.status, body)
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        if (event.get("object") or {}).get("code") == 410:
                            raise WatchExpired()
                        message = (event.get("object") or {}).get("message", "")
                        raise KubeError(f"the {resource} watch failed: {message}")
                    yield event
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise KubeError(
                    f"the {resource} watch broke: {exc or type(exc).__name__}"
                ) from None
            except ValueError:
                raise KubeError(f"the {resource} watch sent a line that is not JSON") from None

    async def missing_permissions(self) -> list[tuple[str, str]]:
        """The (verb, resource) pairs of REQUIRED this identity may not do in the namespace."""
        missing = []
        for verb, resource in REQUIRED:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "namespace": self.namespace,
                        "verb": verb,
                        "resource": resource,
                    }
                },
            }
            path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            response = await self._call("POST", path, body=body)
            async with response:
                raw = await response.read()
                if not 200 <= response.status < 300:
                    raise refused(
                        "create",
                        "selfsubjectaccessreviews",
                        self.namespace,
                        response.status,
                        raw.decode(errors="replace"),
                    )
            if not (json.loads(raw).get("status") or {}).get("allowed"):
                missing.append((verb, resource))
        return missing
