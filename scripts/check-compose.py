#!/usr/bin/env python3
"""Checks docker-compose.yml without a Docker engine: Debian's docker-compose
accepts it (`docker-compose config`), and it agrees with the non-Docker path:
the same ports as `make up`, the same commands, only settings that
.env.example documents, and a health check on every service; the observe
profile's Prometheus, Alertmanager and Grafana on the host's network with
their configuration from deploy/. CI runs it."""

import re
import subprocess
import sys

import yaml

problems = []
rendered = subprocess.run(
    ["docker-compose", "-f", "docker-compose.yml", "config"], capture_output=True, text=True
)
if rendered.returncode != 0:
    sys.exit(f"docker-compose config refused docker-compose.yml:\n{rendered.stderr}")
compose = yaml.safe_load(rendered.stdout)
services = compose["services"]

documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", open(".env.example").read(), re.M))
env = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in open(".env.example").read().splitlines()
       if re.match(r"^[A-Z][A-Z0-9_]*=", line)}

expected = {
    "product": (["product"], env["PRODUCT_PORT"]),
    "order": (["order"], env["ORDER_PORT"]),
    "relay": (["outbox", "relay", "--service", "order"], None),
}
admin_ports = {"product": env["PRODUCT_ADMIN_PORT"], "order": env["ORDER_ADMIN_PORT"]}


def published_ports(service):
    """(host ip, published, target) of each port, whichever way it is rendered."""
    for port in service.get("ports", []):
        if isinstance(port, dict):
            yield port.get("host_ip", ""), str(port.get("published")), str(port.get("target"))
        else:
            parts = str(port).split("/")[0].split(":")
            yield (parts[0] if len(parts) == 3 else ""), parts[-2], parts[-1]

for name, (command, port) in expected.items():
    service = services.get(name)
    if service is None:
        problems.append(f"service {name} is missing")
        continue
    if service.get("command") != command:
        problems.append(f"{name} runs {service.get('command')}, not {command}")
    if port:
        published = {f"{p}:{t}" for _, p, t in published_ports(service)}
        if f"{port}:{port}" not in published:
            problems.append(f"{name} does not publish {port}:{port} as `make up` serves it (has {published})")
    if name in admin_ports:
        admin = admin_ports[name]
        hosts = {ip for ip, p, t in published_ports(service) if (p, t) == (admin, admin)}
        if hosts != {"127.0.0.1"}:
            problems.append(f"{name} must publish its admin port {admin} on 127.0.0.1 only (has {hosts or 'none'})")
    for variable in service.get("environment", {}):
        # NAME_FILE is the documented NAME read from a file (a secret).
        if variable not in documented and variable.removesuffix("_FILE") not in documented:
            problems.append(f"{name} sets {variable}, which .env.example does not document")

# The services read the issuer's keys from the volume it writes them in.
for name in ["product", "order"]:
    service = services.get(name, {})
    if not any(str(volume.get("source") if isinstance(volume, dict) else volume).startswith("auth-keys")
               for volume in service.get("volumes", [])):
        problems.append(f"{name} does not mount the issuer's auth-keys volume")
    if (service.get("environment") or {}).get("AUTH_JWKS_FILE") != "/auth/jwks.json":
        problems.append(f"{name} does not read the issuer's keys (AUTH_JWKS_FILE=/auth/jwks.json)")
    if "issuer" not in (service.get("depends_on") or {}):
        problems.append(f"{name} starts before the issuer made its keys")

for name in ["postgres", "redis", "rabbitmq", "product", "order", "relay"]:
    if "healthcheck" not in services.get(name, {}):
        problems.append(f"{name} has no health check")
for name, service in services.items():
    for dependency, condition in (service.get("depends_on") or {}).items():
        # The issuer and the provisioning run once, and are then done.
        once = ("issuer", "provision")
        wanted = "service_completed_successfully" if dependency in once else "service_healthy"
        if condition.get("condition") != wanted:
            problems.append(f"{name} depends on {dependency} without waiting for it to be healthy")
for name in ["rabbit-a", "rabbit-b", "rabbit-c"]:
    node = services.get(name)
    if node is None:
        problems.append(f"cluster node {name} is missing")
        continue
    if "cluster" not in node.get("profiles", []):
        problems.append(f"{name} is not under the cluster profile")
    if "healthcheck" not in node:
        problems.append(f"{name} has no health check")
if "load" not in services.get("k6", {}).get("profiles", []):
    problems.append("k6 is not under the load profile")

# The observe profile: on the host's network, since Prometheus scrapes the
# services where they are published (127.0.0.1, as under `make up`), reading
# its configuration and the dashboards from deploy/.
observe = {
    "prometheus": "/deploy/prometheus:/etc/prometheus:ro",
    "alertmanager": "/deploy/alertmanager:/etc/alertmanager:ro",
    "grafana": "/deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
}
for name, mount in observe.items():
    service = services.get(name)
    if service is None:
        problems.append(f"{name} is missing (observe profile)")
        continue
    if "observe" not in service.get("profiles", []):
        problems.append(f"{name} is not under the observe profile")
    if "healthcheck" not in service:
        problems.append(f"{name} has no health check")
    if service.get("network_mode") != "host":
        problems.append(f"{name} is not on the host network, where the scrape targets (127.0.0.1) are")
    if not any(str(volume).endswith(mount) for volume in service.get("volumes", [])):
        problems.append(f"{name} does not mount ...{mount}")
# Nothing of the observe profile listens beyond the host's loopback (host
# networking: their own listen addresses decide), no lifecycle API, and
# Grafana's admin password comes from a secret.
listen = {"prometheus": "--web.listen-address=127.0.0.1:9090", "alertmanager": "--web.listen-address=127.0.0.1:9093"}
for name, flag in listen.items():
    command = services.get(name, {}).get("command") or []
    if flag not in command:
        problems.append(f"{name} must listen on 127.0.0.1 only ({flag})")
    if any("enable-lifecycle" in str(part) for part in command):
        problems.append(f"{name} serves its lifecycle API (--web.enable-lifecycle)")
grafana_env = services.get("grafana", {}).get("environment") or {}
if grafana_env.get("GF_SERVER_HTTP_ADDR") != "127.0.0.1":
    problems.append("grafana must listen on 127.0.0.1 only (GF_SERVER_HTTP_ADDR)")
if not str(grafana_env.get("GF_SECURITY_ADMIN_PASSWORD__FILE", "")).startswith("/run/secrets/"):
    problems.append("grafana's admin password must come from a secret (GF_SECURITY_ADMIN_PASSWORD__FILE)")
# No password in the file: the database URLs come from secrets, and the
# services wait for their roles to be made.
for name in ["product", "order", "relay", "provision"]:
    environment = services.get(name, {}).get("environment") or {}
    for prefix in ["PRODUCT", "ORDER"]:
        for setting in [f"{prefix}_DATABASE_URL", f"{prefix}_DATABASE_OWNER_URL"]:
            if environment.get(setting) or not str(environment.get(f"{setting}_FILE", "")).startswith("/run/secrets/"):
                problems.append(f"{name} must read {setting} from a secret ({setting}_FILE), with {setting} blank")
    if name != "provision" and environment.get("DATABASE_ADMIN_URL"):
        problems.append(f"{name} is given the database administrator's URL")
for name in ["product", "order"]:
    if "provision" not in (services.get(name, {}).get("depends_on") or {}):
        problems.append(f"{name} starts before its database roles are provisioned")
postgres_env = services.get("postgres", {}).get("environment") or {}
if "POSTGRES_PASSWORD" in postgres_env or not str(postgres_env.get("POSTGRES_PASSWORD_FILE", "")).startswith("/run/secrets/"):
    problems.append("postgres's superuser password must come from a secret (POSTGRES_PASSWORD_FILE)")
# The cluster's Erlang cookie: a secret, never a fixed string.
for name in ["rabbit-a", "rabbit-b", "rabbit-c"]:
    node = services.get(name, {})
    if "RABBITMQ_ERLANG_COOKIE" in (node.get("environment") or {}):
        problems.append(f"{name} takes its Erlang cookie from the file (RABBITMQ_ERLANG_COOKIE)")
    if "rabbitmq_erlang_cookie" not in [s if isinstance(s, str) else s.get("source") for s in node.get("secrets", [])]:
        problems.append(f"{name} does not read its Erlang cookie from the rabbitmq_erlang_cookie secret")
management = {(ip, p) for ip, p, t in published_ports(services.get("rabbitmq", {})) if t == "15672"}
if management and management != {("127.0.0.1", "15672")}:
    problems.append(f"RabbitMQ's management UI must be published on 127.0.0.1 only (has {management})")

grafana_port = str((services.get("grafana", {}).get("environment") or {}).get("GF_SERVER_HTTP_PORT", "3000"))
if grafana_port in (env["PRODUCT_PORT"], env["ORDER_PORT"]):
    problems.append(f"grafana listens on the host's :{grafana_port}, a service's port (set GF_SERVER_HTTP_PORT)")

readme = open("README.md").read()
for needle in ["make up", "docker compose up --build"]:
    if needle not in readme:
        problems.append(f"README.md does not show `{needle}`")

if problems:
    sys.exit("docker-compose.yml disagrees with the project:\n  " + "\n  ".join(problems))
print(f"docker-compose.yml: accepted by docker-compose, {len(services)} services, consistent with make up and .env.example")
