"""Typed settings, built once (from flags and environment) in the composition root."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hodei.agent_bundle import bundle_problem
from hodei.errors import ValidationError

if TYPE_CHECKING:
    from hodei.adapters.providers.kubernetes_spec import KubernetesOptions
    from hodei.adapters.providers.microvm_spec import MicrovmOptions


def default_home() -> Path:
    return Path(os.environ.get("HODEI_HOME") or Path.home() / ".hodei")


PROVIDERS = ("local", "docker", "kubernetes", "microvm")


def parse_mount(spec: str) -> tuple[str, str, str]:
    """'HOST:CONTAINER[:ro|rw]' -> (host, container, mode); read-only unless ':rw' is given."""
    parts = spec.split(":")
    mode = parts.pop() if len(parts) == 3 else "ro"
    if len(parts) != 2 or mode not in ("ro", "rw"):
        raise ValidationError(f"invalid docker mount {spec!r}: use HOST:CONTAINER[:ro|rw]")
    host, target = parts
    if not (host.startswith("/") and target.startswith("/")):
        raise ValidationError(f"invalid docker mount {spec!r}: both paths must be absolute")
    return host, target, mode


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """'127.0.0.1:8080' / '[::1]:8080' / 'localhost' -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        host, port = addr, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValidationError(f"invalid address {addr!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise ValidationError(f"invalid address {addr!r}: port out of range")
    return host, number


@dataclass(slots=True)
class ServerSettings:
    home: Path = field(default_factory=default_home)
    database_url: str = ""  # empty: sqlite:///<home>/hodei.db; or postgresql://...
    provider: str = "local"
    http_addr: str = "127.0.0.1:8080"
    grpc_addr: str = "127.0.0.1:50051"
    # Prometheus without a token: /metrics alone on this loopback address ("" = off).
    metrics_addr: str = ""
    log_format: str = "text"  # the server's own log lines: "text" or "json" (one object a line)
    otlp_endpoint: str = ""  # OpenTelemetry traces go to this OTLP gRPC endpoint ("" = off)
    worker_image: str = "hodei-worker:latest"
    max_workers: int = 4  # local provider: agents running at once
    worker_slots: int = 1  # jobs each provisioned agent runs at once
    worker_idle_s: float = 30.0  # idle provisioned workers stop after this long
    cancel_grace_s: float = 5.0  # SIGTERM -> SIGKILL
    scheduling_policy: str = "spread"  # or "binpack"
    priority_aging_s: float = 60.0  # waiting this long is worth one priority point (0: off)
    retry_backoff_s: float = 1.0  # first retry waits this long, then twice as long each time
    worker_grace_s: float = 30.0  # a dropped worker may reconnect this long before it is lost
    # A job submitted without its own bound is queued again at most this often after attempts
    # lost to the platform (worker or server gone, store failing), spending no max_retries.
    infra_retries: int = 2
    heartbeat_interval_s: float = 5.0
    otp_ttl_s: float = 600.0
    max_output_bytes: int = 100 * 1024 * 1024  # per job attempt; past it the log is truncated
    artifact_max_bytes: int = 256 * 1024 * 1024  # one attempt's artifact archive at most
    artifact_retention_s: float = 7 * 86400.0  # archives and outputs are kept this long
    # A schedule may not fire more often than this (its shortest gap between two fires).
    schedule_min_interval_s: float = 60.0
    demo: bool = False
    # No API tokens: every request acts as an admin. Only on loopback addresses.
    dev: bool = False
    # Where logs live (default HODEI_HOME/logs). Servers sharing a PostgreSQL store share it.
    log_dir_path: str = ""
    # mTLS (see docs/pki.md): HTTPS and a gRPC port that requires agent certificates.
    tls: bool = False
    cert_lifetime_s: float = 86400.0  # agent certificates; agents renew at 2/3 of it
    # Docker provider. Safe by default: workers get no privileged mode, no engine socket and no
    # host path unless the operator turns these on.
    docker_network: str = "host"  # network mode of worker containers
    docker_server_url: str = ""  # gRPC address containers dial (empty: the server's own)
    docker_privileged: bool = False
    docker_socket: bool = False  # mount the engine's socket into workers (root on the host)
    docker_mounts: tuple[str, ...] = ()  # host paths for workers: HOST:CONTAINER[:ro|rw]
    local_agent: str = ""  # local workers run this agent executable directory (empty: Python)
    docker_job_user: str = ""  # user of containers started in a job's image (empty: its own)
    # Kubernetes provider (docs/kubernetes.md): workers are pods in one namespace.
    k8s_namespace: str = ""  # empty: the in-cluster namespace, else "default"
    k8s_kubeconfig: str = ""  # empty: $KUBECONFIG or ~/.kube/config
    k8s_context: str = ""
    k8s_in_cluster: bool = False  # the service account of the server's own pod
    k8s_server_url: str = ""  # gRPC address worker pods dial (empty: the server's own)
    k8s_service_account: str = ""  # of worker pods (empty: the namespace's default)
    k8s_automount_token: bool = False  # give worker pods their service account's token
    k8s_image_pull_policy: str = "IfNotPresent"
    k8s_image_pull_secrets: tuple[str, ...] = ()
    k8s_node_selector: tuple[str, ...] = ()  # NODE_LABEL=VALUE, every worker pod
    k8s_label_node_selector: tuple[str, ...] = ()  # JOB_LABEL=NODE_LABEL
    k8s_tolerations: tuple[str, ...] = ()  # KEY[=VALUE][:EFFECT]
    k8s_labels: tuple[str, ...] = ()  # KEY=VALUE, extra pod labels
    k8s_annotations: tuple[str, ...] = ()  # KEY=VALUE
    k8s_cpu_per_slot: float = 0.0  # a pod's cpu when its job asks none, per slot
    k8s_memory_per_slot: int = 0  # likewise, bytes
    k8s_start_timeout_s: float = 50.0  # a pod whose agent does not run by then is deleted
    # MicroVM provider (docs/microvm.md): each worker in a VM of its own.
    microvm_vmm: str = "qemu"  # or "firecracker"
    microvm_kvm: str = "auto"  # auto (KVM when /dev/kvm works), on, off
    microvm_dir: str = ""  # the assets' directory (empty: HODEI_HOME/microvm)
    microvm_kernel: str = ""  # each empty: vmlinux, initramfs.cpio.gz, rootfs.ext4 in it
    microvm_initrd: str = ""
    microvm_rootfs: str = ""
    microvm_vcpus: int = 1  # a VM's vCPUs when its job asks no cpu
    microvm_memory: int = 512 << 20  # a VM's memory when its job asks none
    microvm_server_url: str = ""  # gRPC address VMs dial (empty: the server's port at 10.0.2.2)
    microvm_boot_timeout_s: float = 50.0  # a VM whose agent has not registered by then is killed
    microvm_tap: str = ""  # Firecracker: the operator's TAP device
    microvm_jailer: str = ""  # Firecracker: run it under this jailer binary

    @property
    def database_kind(self) -> str:
        """'sqlite' or 'postgresql', from the URL's scheme; ValidationError for anything else."""
        url = self.database_url
        if not url or url.startswith("sqlite:///"):
            return "sqlite"
        scheme = url.partition("://")[0].lower()
        if scheme in ("postgresql", "postgres") and "://" in url:
            return "postgresql"
        # Only the scheme is repeated: the rest of a URL may hold a password.
        raise ValidationError(
            f"unsupported HODEI_DATABASE_URL (scheme {scheme[:20]!r}): use sqlite:///path or "
            "postgresql://user:password@host:port/database"
        )

    @property
    def sqlite_path(self) -> Path:
        url = self.database_url
        if self.database_kind != "sqlite":
            raise ValidationError("HODEI_DATABASE_URL names a PostgreSQL database, not SQLite")
        if not url:
            return self.home / "hodei.db"
        return Path(url.removeprefix("sqlite:///"))

    @property
    def log_dir(self) -> Path:
        return Path(self.log_dir_path) if self.log_dir_path else self.home / "logs"

    def validate(self) -> ServerSettings:
        split_addr(self.http_addr, 8080)
        split_addr(self.grpc_addr, 50051)
        if self.provider not in PROVIDERS:
            raise ValidationError(
                f"unknown or unavailable provider {self.provider!r} "
                f"(available: {', '.join(PROVIDERS)})"
            )
        if self.local_agent and (problem := bundle_problem(self.local_agent)) is not None:
            raise ValidationError(f"--local-agent: {problem}")
        if not self.docker_network.strip():
            raise ValidationError("docker network mode must not be empty")
        for mount in self.docker_mounts:
            parse_mount(mount)
        if self.provider == "kubernetes":
            self.kubernetes_options()
        if self.provider == "microvm":
            self.microvm_options()
        if self.max_workers < 0 or self.worker_slots < 1:
            raise ValidationError("max workers must be >= 0 and worker slots >= 1")
        if not 0.05 <= self.heartbeat_interval_s <= 3600:
            raise ValidationError("heartbeat interval must be between 50ms and 1h")
        if self.scheduling_policy not in ("spread", "binpack"):
            raise ValidationError("scheduling policy must be spread or binpack")
        if not 0 <= self.retry_backoff_s <= 3600:
            raise ValidationError("retry backoff must be between 0 and 1h")
        if self.priority_aging_s < 0:
            raise ValidationError("priority aging must not be negative")
        if not 0 <= self.infra_retries <= 100:
            raise ValidationError("infra retries must be between 0 and 100")
        if not 0 <= self.worker_grace_s <= 86400:
            raise ValidationError("worker grace must be between 0 and 1 day")
        if not 0 <= self.cancel_grace_s <= 3600:
            raise ValidationError("cancel grace must be between 0 and 1h")
        if not 1024 <= self.max_output_bytes <= 1 << 40:
            raise ValidationError("max output must be between 1K and 1T")
        if not 1024 <= self.artifact_max_bytes <= 1 << 40:
            raise ValidationError("artifact max bytes must be between 1K and 1T")
        if not 60 <= self.artifact_retention_s <= 3660 * 86400:
            raise ValidationError("artifact retention must be between 1 minute and 10 years")
        if not 60 <= self.schedule_min_interval_s <= 366 * 86400:
            raise ValidationError("schedule minimum interval must be between 1 minute and 1 year")
        if not 1 <= self.cert_lifetime_s <= 366 * 86400:
            raise ValidationError("certificate lifetime must be between 1s and 366 days")
        if self.metrics_addr and not is_loopback(split_addr(self.metrics_addr, 9464)[0]):
            raise ValidationError(
                f"--metrics-addr serves /metrics without a token: a loopback address only, not "
                f"{self.metrics_addr} (elsewhere, scrape /metrics on the API port with a viewer "
                "token)"
            )
        if self.log_format not in ("text", "json"):
            raise ValidationError(f"unknown log format {self.log_format[:20]!r} (text or json)")
        if self.dev:
            for addr, port in ((self.http_addr, 8080), (self.grpc_addr, 50051)):
                if not is_loopback(split_addr(addr, port)[0]):
                    raise ValidationError(
                        f"dev mode (no API tokens) is only allowed on loopback addresses, "
                        f"not {addr}"
                    )
        _ = self.database_kind
        return self

    def microvm_options(self) -> MicrovmOptions:
        """The microVM provider's options (ValidationError for a malformed one)."""
        from hodei.adapters.providers.microvm_spec import KVM_MODES, VMMS, MicrovmOptions

        if self.microvm_vmm not in VMMS:
            raise ValidationError(f"microvm VMM must be one of {', '.join(VMMS)}")
        if self.microvm_kvm not in KVM_MODES:
            raise ValidationError(f"microvm KVM must be one of {', '.join(KVM_MODES)}")
        if not 1 <= self.microvm_vcpus <= 64:
            raise ValidationError("microvm vCPUs must be between 1 and 64")
        if not 128 << 20 <= self.microvm_memory <= 1 << 40:
            raise ValidationError("microvm memory must be between 128M and 1T")
        if not 1 <= self.microvm_boot_timeout_s <= 3600:
            raise ValidationError("microvm boot timeout must be between 1s and 1h")
        if self.microvm_vmm == "firecracker" and not self.microvm_tap:
            raise ValidationError("the firecracker VMM needs --microvm-tap (docs/microvm.md)")
        base = Path(self.microvm_dir) if self.microvm_dir else self.home / "microvm"
        return MicrovmOptions(
            kernel=Path(self.microvm_kernel) if self.microvm_kernel else base / "vmlinux",
            initrd=Path(self.microvm_initrd) if self.microvm_initrd else base / "initramfs.cpio.gz",
            rootfs=Path(self.microvm_rootfs) if self.microvm_rootfs else base / "rootfs.ext4",
            vmm=self.microvm_vmm,
            kvm=self.microvm_kvm,
            vcpus=self.microvm_vcpus,
            memory_mib=self.microvm_memory >> 20,
            server_url=self.microvm_server_url,
            boot_timeout_s=self.microvm_boot_timeout_s,
            tap_device=self.microvm_tap,
            jailer_binary=self.microvm_jailer,
        )

    @property
    def k8s_label_keys(self) -> tuple[str, ...]:
        """The job label keys a Kubernetes worker is placed by (--k8s-label-node-selector)."""
        if self.provider != "kubernetes":
            return ()
        return tuple(key for key, _ in self.kubernetes_options().label_node_selectors)

    def kubernetes_options(self) -> KubernetesOptions:
        """The Kubernetes provider's options (ValidationError for a malformed one)."""
        from hodei.adapters.providers.kubernetes_spec import (
            PULL_POLICIES,
            KubernetesOptions,
            parse_pair,
            parse_toleration,
        )

        if self.k8s_image_pull_policy not in PULL_POLICIES:
            raise ValidationError(
                f"k8s image pull policy must be one of {', '.join(PULL_POLICIES)}"
            )
        if self.k8s_cpu_per_slot < 0 or self.k8s_memory_per_slot < 0:
            raise ValidationError("k8s cpu and memory per slot must not be negative")
        if not 1 <= self.k8s_start_timeout_s <= 3600:
            raise ValidationError("k8s start timeout must be between 1s and 1h")
        try:
            return KubernetesOptions(
                namespace=self.k8s_namespace,
                image=self.worker_image,
                server_url=self.k8s_server_url,
                service_account=self.k8s_service_account,
                automount_token=self.k8s_automount_token,
                image_pull_policy=self.k8s_image_pull_policy,
                image_pull_secrets=self.k8s_image_pull_secrets,
                node_selector=tuple(parse_pair(p, "node selector") for p in self.k8s_node_selector),
                label_node_selectors=tuple(
                    parse_pair(p, "label node selector") for p in self.k8s_label_node_selector
                ),
                tolerations=tuple(parse_toleration(t) for t in self.k8s_tolerations),
                labels=tuple(parse_pair(p, "pod label") for p in self.k8s_labels),
                annotations=tuple(parse_pair(p, "pod annotation") for p in self.k8s_annotations),
                cpu_per_slot=self.k8s_cpu_per_slot,
                memory_per_slot=self.k8s_memory_per_slot,
                start_timeout_s=self.k8s_start_timeout_s,
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
