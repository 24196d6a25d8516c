"""`hodei server`: run the server (REST + SSE, gRPC, scheduler, on-demand workers)."""

from __future__ import annotations

from typing import Annotated

import typer

from hodei.cli.common import DEFAULT_GRPC, HomeOpt, app, fail, guarded, home_dir, parse_opt


@app.command()
@guarded
def server(
    http_addr: Annotated[
        str, typer.Option(envvar="HODEI_HTTP_ADDR", help="REST/SSE address.")
    ] = "127.0.0.1:8080",
    grpc_addr: Annotated[
        str, typer.Option(envvar="HODEI_GRPC_ADDR", help="gRPC address.")
    ] = DEFAULT_GRPC,
    metrics_addr: Annotated[
        str,
        typer.Option(
            envvar="HODEI_METRICS_ADDR",
            help="Serve /metrics without a token on this loopback address (e.g. 127.0.0.1:9464).",
        ),
    ] = "",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="HODEI_LOG_FORMAT", help="The server's log lines: text, or json (one a line)."
        ),
    ] = "text",
    otlp_endpoint: Annotated[
        str,
        typer.Option(
            envvar=["HODEI_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
            help="Send OpenTelemetry traces to this OTLP gRPC endpoint (e.g. "
            "http://127.0.0.1:4317); off when empty.",
        ),
    ] = "",
    database_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_DATABASE_URL",
            help="sqlite:///path (default: in --home) or postgresql://user:pass@host/db.",
        ),
    ] = "",
    provider: Annotated[
        str, typer.Option(envvar="HODEI_PROVIDER", help="Worker provider.")
    ] = "local",
    worker_image: Annotated[
        str, typer.Option(envvar="HODEI_WORKER_IMAGE", help="Worker image (container providers).")
    ] = "hodei-worker:latest",
    docker_network: Annotated[
        str,
        typer.Option(envvar="HODEI_DOCKER_NETWORK", help="Network mode of Docker workers."),
    ] = "host",
    docker_server_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_DOCKER_SERVER_URL",
            help="gRPC address Docker workers dial (default: the server's --grpc-addr).",
        ),
    ] = "",
    local_agent: Annotated[
        str,
        typer.Option(
            "--local-agent",
            envvar="HODEI_LOCAL_AGENT",
            help="Local workers run the agent executable in this directory "
            "(scripts/build_agent_binary.sh) instead of this Python.",
        ),
    ] = "",
    docker_job_user: Annotated[
        str,
        typer.Option(
            "--docker-job-user",
            envvar="HODEI_DOCKER_JOB_USER",
            help="User (UID[:GID] or name) that workers in a job's image run as "
            "(default: the image's own user).",
        ),
    ] = "",
    docker_privileged: Annotated[
        bool,
        typer.Option(
            "--docker-privileged",
            envvar="HODEI_DOCKER_PRIVILEGED",
            help="Run Docker workers privileged (off: never).",
        ),
    ] = False,
    docker_socket: Annotated[
        bool,
        typer.Option(
            "--docker-socket",
            envvar="HODEI_DOCKER_SOCKET",
            help="Give Docker workers the engine's socket (root on the host; off: never).",
        ),
    ] = False,
    docker_mount: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_DOCKER_MOUNTS",
            help="Host path for Docker workers, HOST:CONTAINER[:ro|rw] (repeatable; read-only "
            "unless :rw; none by default).",
        ),
    ] = None,
    k8s_namespace: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_NAMESPACE",
            help="Namespace of Kubernetes worker pods (default: the server's own in a "
            "cluster, else default).",
        ),
    ] = "",
    k8s_kubeconfig: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_KUBECONFIG", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube)."
        ),
    ] = "",
    k8s_context: Annotated[
        str, typer.Option(envvar="HODEI_K8S_CONTEXT", help="Kubeconfig context to use.")
    ] = "",
    k8s_in_cluster: Annotated[
        bool,
        typer.Option(
            "--k8s-in-cluster",
            envvar="HODEI_K8S_IN_CLUSTER",
            help="Use the service account of the server's own pod (no kubeconfig).",
        ),
    ] = False,
    k8s_server_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_SERVER_URL",
            help="gRPC address worker pods dial, e.g. hodei.hodei.svc:50051 (default: the "
            "server's --grpc-addr).",
        ),
    ] = "",
    k8s_service_account: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_SERVICE_ACCOUNT",
            help="Service account of worker pods (default: the namespace's default).",
        ),
    ] = "",
    k8s_automount_token: Annotated[
        bool,
        typer.Option(
            "--k8s-automount-token",
            envvar="HODEI_K8S_AUTOMOUNT_TOKEN",
            help="Mount the service account's API token into worker pods (off: never).",
        ),
    ] = False,
    k8s_image_pull_policy: Annotated[
        str,
        typer.Option(envvar="HODEI_K8S_IMAGE_PULL_POLICY", help="Always, IfNotPresent or Never."),
    ] = "IfNotPresent",
    k8s_image_pull_secret: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_K8S_IMAGE_PULL_SECRETS",
            help="Image pull Secret of worker pods (repeatable).",
        ),
    ] = None,
    k8s_node_selector: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_K8S_NODE_SELECTOR",
            help="NODE_LABEL=VALUE every worker pod's node must carry (repeatable).",
        ),
    ] = None,
    k8s_label_node_selector: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_K8S_LABEL_NODE_SELECTORS",
            help="JOB_LABEL=NODE_LABEL: a job labelled JOB_LABEL=v gets a worker of its own, "
            "labelled so, on a node with NODE_LABEL=v (repeatable).",
        ),
    ] = None,
    k8s_toleration: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_K8S_TOLERATIONS",
            help="Toleration of worker pods, KEY[=VALUE][:EFFECT] (repeatable).",
        ),
    ] = None,
    k8s_pod_label: Annotated[
        list[str] | None,
        typer.Option(envvar="HODEI_K8S_POD_LABELS", help="Extra label of worker pods, KEY=VALUE."),
    ] = None,
    k8s_pod_annotation: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_K8S_POD_ANNOTATIONS", help="Annotation of worker pods, KEY=VALUE."
        ),
    ] = None,
    k8s_cpu_per_slot: Annotated[
        float,
        typer.Option(
            envvar="HODEI_K8S_CPU_PER_SLOT",
            min=0,
            help="CPU request and limit per slot of a pod whose job asks none (0: none).",
        ),
    ] = 0.0,
    k8s_memory_per_slot: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_MEMORY_PER_SLOT",
            help="Memory request and limit per slot of a pod whose job asks none (0: none).",
        ),
    ] = "0",
    k8s_start_timeout: Annotated[
        str,
        typer.Option(
            envvar="HODEI_K8S_START_TIMEOUT",
            help="A worker pod whose agent is not running by then is deleted (a failed start).",
        ),
    ] = "50s",
    microvm_vmm: Annotated[
        str,
        typer.Option(envvar="HODEI_MICROVM_VMM", help="MicroVM monitor: qemu or firecracker."),
    ] = "qemu",
    microvm_kvm: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_KVM",
            help="auto (KVM when /dev/kvm works, else software emulation), on or off.",
        ),
    ] = "auto",
    microvm_dir: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_DIR",
            help="MicroVM assets (scripts/build_microvm_assets.sh; default HODEI_HOME/microvm).",
        ),
    ] = "",
    microvm_kernel: Annotated[
        str, typer.Option(envvar="HODEI_MICROVM_KERNEL", help="Guest kernel (default: vmlinux).")
    ] = "",
    microvm_initrd: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_INITRD", help="Guest initramfs (default: initramfs.cpio.gz)."
        ),
    ] = "",
    microvm_rootfs: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_ROOTFS", help="Guest root file system (default: rootfs.ext4)."
        ),
    ] = "",
    microvm_vcpus: Annotated[
        int,
        typer.Option(envvar="HODEI_MICROVM_VCPUS", help="vCPUs of a VM whose job asks no cpu."),
    ] = 1,
    microvm_memory: Annotated[
        str,
        typer.Option(envvar="HODEI_MICROVM_MEMORY", help="Memory of a VM whose job asks none."),
    ] = "512M",
    microvm_server_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_SERVER_URL",
            help="gRPC address VMs dial (default: the server's port at 10.0.2.2, the host).",
        ),
    ] = "",
    microvm_boot_timeout: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MICROVM_BOOT_TIMEOUT",
            help="A VM whose agent has not registered by then is killed (a failed start).",
        ),
    ] = "50s",
    microvm_tap: Annotated[
        str, typer.Option(envvar="HODEI_MICROVM_TAP", help="Firecracker: the VMs' TAP device.")
    ] = "",
    microvm_jailer: Annotated[
        str,
        typer.Option(envvar="HODEI_MICROVM_JAILER", help="Firecracker: run it under this jailer."),
    ] = "",
    home: HomeOpt = None,
    max_workers: Annotated[
        int, typer.Option(envvar="HODEI_MAX_WORKERS", min=0, help="Provisioned workers at most.")
    ] = 4,
    worker_slots: Annotated[
        int, typer.Option(envvar="HODEI_WORKER_SLOTS", min=1, help="Jobs per provisioned worker.")
    ] = 1,
    worker_idle: Annotated[
        str, typer.Option(envvar="HODEI_WORKER_IDLE", help="Stop idle provisioned workers after.")
    ] = "30s",
    heartbeat_interval: Annotated[
        str,
        typer.Option(envvar="HODEI_HEARTBEAT_INTERVAL", help="How often agents report usage."),
    ] = "5s",
    cancel_grace: Annotated[
        str,
        typer.Option(envvar="HODEI_CANCEL_GRACE", help="SIGTERM -> SIGKILL delay on cancel."),
    ] = "5s",
    scheduling_policy: Annotated[
        str,
        typer.Option(
            envvar="HODEI_SCHEDULING_POLICY", help="spread (least-loaded first) or binpack."
        ),
    ] = "spread",
    priority_aging: Annotated[
        str,
        typer.Option(
            envvar="HODEI_PRIORITY_AGING",
            help="Waiting this long is worth one priority point (0 turns aging off).",
        ),
    ] = "60s",
    retry_backoff: Annotated[
        str,
        typer.Option(
            envvar="HODEI_RETRY_BACKOFF",
            help="First retry waits this long; each next one twice as long (max 5m).",
        ),
    ] = "1s",
    infra_retries: Annotated[
        int,
        typer.Option(
            envvar="HODEI_INFRA_RETRIES",
            help="A job lost to the platform (worker or server gone) is queued again up to "
            "this many times without spending its retries, unless it sets its own bound.",
        ),
    ] = 2,
    worker_grace: Annotated[
        str,
        typer.Option(
            envvar="HODEI_WORKER_GRACE", help="How long a disconnected worker may come back."
        ),
    ] = "30s",
    max_output: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MAX_OUTPUT",
            help="Output kept per job attempt; past it the log is truncated with a note.",
        ),
    ] = "100M",
    artifact_max_bytes: Annotated[
        str,
        typer.Option(
            envvar="HODEI_ARTIFACT_MAX_BYTES",
            help="Size limit of one job attempt's artifact archive.",
        ),
    ] = "256M",
    artifact_retention: Annotated[
        str,
        typer.Option(
            envvar="HODEI_ARTIFACT_RETENTION",
            help="How long artifact archives and outputs are kept.",
        ),
    ] = "7d",
    schedule_min_interval: Annotated[
        str,
        typer.Option(
            envvar="HODEI_SCHEDULE_MIN_INTERVAL",
            help="Refuse schedules that would fire more often than this.",
        ),
    ] = "1m",
    demo: Annotated[
        bool, typer.Option("--demo", help="Submit a demo job and print its log live.")
    ] = False,
    log_dir: Annotated[
        str,
        typer.Option(
            envvar="HODEI_LOG_DIR",
            help="Where job logs live (default HODEI_HOME/logs); servers sharing a PostgreSQL "
            "database share this directory.",
        ),
    ] = "",
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            envvar="HODEI_DEV",
            help="No API tokens: every request acts as an admin (loopback addresses only).",
        ),
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            envvar="HODEI_TLS",
            help="HTTPS, and mTLS for agents with certificates from the home's CA (see "
            "`hodei pki`; created on first use).",
        ),
    ] = False,
    cert_lifetime: Annotated[
        str,
        typer.Option(
            envvar="HODEI_CERT_LIFETIME",
            help="Lifetime of agent certificates (agents renew at 2/3 of it).",
        ),
    ] = "24h",
) -> None:
    """Start the server (REST + SSE, gRPC, scheduler, on-demand workers)."""
    from pathlib import Path

    from hodei.config import ServerSettings
    from hodei.domain.jobs import parse_duration, parse_size

    idle = parse_opt(parse_duration, worker_idle, "--worker-idle")
    settings = ServerSettings(
        database_url=database_url,
        provider=provider,
        http_addr=http_addr,
        grpc_addr=grpc_addr,
        metrics_addr=metrics_addr,
        log_format=log_format,
        otlp_endpoint=otlp_endpoint.strip(),
        worker_image=worker_image,
        max_workers=max_workers,
        worker_slots=worker_slots,
        worker_idle_s=idle,
        heartbeat_interval_s=parse_opt(parse_duration, heartbeat_interval, "--heartbeat-interval"),
        cancel_grace_s=parse_opt(parse_duration, cancel_grace, "--cancel-grace"),
        worker_grace_s=parse_opt(parse_duration, worker_grace, "--worker-grace"),
        scheduling_policy=scheduling_policy,
        retry_backoff_s=parse_opt(parse_duration, retry_backoff, "--retry-backoff"),
        infra_retries=infra_retries,
        priority_aging_s=parse_opt(parse_duration, priority_aging, "--priority-aging"),
        max_output_bytes=parse_opt(parse_size, max_output, "--max-output"),
        artifact_max_bytes=parse_opt(parse_size, artifact_max_bytes, "--artifact-max-bytes"),
        artifact_retention_s=parse_opt(parse_duration, artifact_retention, "--artifact-retention"),
        schedule_min_interval_s=parse_opt(
            parse_duration, schedule_min_interval, "--schedule-min-interval"
        ),
        demo=demo,
        dev=dev,
        log_dir_path=log_dir,
        tls=tls,
        cert_lifetime_s=parse_opt(parse_duration, cert_lifetime, "--cert-lifetime"),
        docker_network=docker_network,
        docker_server_url=docker_server_url,
        docker_privileged=docker_privileged,
        docker_job_user=docker_job_user,
        local_agent=local_agent,
        docker_socket=docker_socket,
        docker_mounts=tuple(docker_mount or ()),
        microvm_vmm=microvm_vmm,
        microvm_kvm=microvm_kvm,
        microvm_dir=microvm_dir,
        microvm_kernel=microvm_kernel,
        microvm_initrd=microvm_initrd,
        microvm_rootfs=microvm_rootfs,
        microvm_vcpus=microvm_vcpus,
        microvm_memory=parse_opt(parse_size, microvm_memory, "--microvm-memory"),
        microvm_server_url=microvm_server_url,
        microvm_boot_timeout_s=parse_opt(
            parse_duration, microvm_boot_timeout, "--microvm-boot-timeout"
        ),
        microvm_tap=microvm_tap,
        microvm_jailer=microvm_jailer,
        k8s_namespace=k8s_namespace,
        k8s_kubeconfig=k8s_kubeconfig,
        k8s_context=k8s_context,
        k8s_in_cluster=k8s_in_cluster,
        k8s_server_url=k8s_server_url,
        k8s_service_account=k8s_service_account,
        k8s_automount_token=k8s_automount_token,
        k8s_image_pull_policy=k8s_image_pull_policy,
        k8s_image_pull_secrets=tuple(k8s_image_pull_secret or ()),
        k8s_node_selector=tuple(k8s_node_selector or ()),
        k8s_label_node_selector=tuple(k8s_label_node_selector or ()),
        k8s_tolerations=tuple(k8s_toleration or ()),
        k8s_labels=tuple(k8s_pod_label or ()),
        k8s_annotations=tuple(k8s_pod_annotation or ()),
        k8s_cpu_per_slot=k8s_cpu_per_slot,
        k8s_memory_per_slot=parse_opt(parse_size, k8s_memory_per_slot, "--k8s-memory-per-slot"),
        k8s_start_timeout_s=parse_opt(parse_duration, k8s_start_timeout, "--k8s-start-timeout"),
    )
    home = home_dir(home)
    if home:
        settings.home = Path(home).expanduser()
    settings.validate()
    from hodei.server.app import run_server

    try:
        status = run_server(settings)
    except OSError as exc:  # e.g. the address is in use
        fail(f"cannot start the server: {exc}")
    raise SystemExit(status)
