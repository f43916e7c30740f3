"""The deploy files agree with the app: they parse, listen on the app's port, probe routes
the app has (liveness where a failing check restarts or unroutes the instance for good,
readiness only where "full" or "draining" should just steer new calls elsewhere), name
only variables the app reads, keep secrets out, and give a draining bridge the time its
calls need. Everything is derived from the code (Settings, the app's routes, the drain's
timings), so a change on either side that breaks a deployment fails here."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from pydantic import SecretStr
from uvicorn.server import HANDLED_SIGNALS

from bridge.admission import GOODBYE_WAIT_S
from bridge.app import create_app
from bridge.draining_server import server_config
from bridge.live_calls import STOP_DEADLINE_S
from bridge.post_call_webhook import RELEASE_DEADLINE_S
from bridge.records.write_behind import ACK_WAIT_S, FLUSH_AT_CLOSE_S
from bridge.settings import Settings, load_settings
from tests.deploy.files import (
    DEPLOY,
    K8S,
    ROOT,
    RUNTIME_VARIABLES,
    context_copies,
    dockerignore_patterns,
    is_dockerignored,
    parse_dockerfile,
    secret_setting_names,
)
from tests.helpers.settings_env import setting_names

DEFAULT_PORT: int = Settings.model_fields["port"].default
# The variables a deployment behind a public URL cannot do without.
REQUIRED_EVERYWHERE = {"PUBLIC_URL", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY"}
# Where a host's own limit is fixed, not ours to set.
RENDER_MAX_SHUTDOWN_DELAY_S = 300


@pytest.fixture(scope="module")
def app_settings() -> Iterator[Settings]:
    """The app's defaults, untouched by the machine's environment or a .env file."""
    saved = pytest.MonkeyPatch()
    for name in setting_names():
        saved.delenv(name, raising=False)
    try:
        yield load_settings(_env_file=None, call_db_path="")
    finally:
        saved.undo()


@pytest.fixture(scope="module")
def probe_kinds(app_settings: Settings) -> dict[str, str]:
    """Each GET route's probe behaviour, asked of the app itself with every protection on
    (a probe sends no credentials): "liveness" if it answers 200 and still does while the
    bridge drains, "readiness" if it then fails."""
    protected = app_settings.model_copy(
        update={
            "twilio_auth_token": SecretStr("t" * 32),
            "metrics_token": SecretStr("m" * 32),
            "operator_token": SecretStr("o" * 32),
            "console_password": SecretStr("c" * 16),
        }
    )
    app = create_app(protected)
    paths = [r.path for r in app.routes if isinstance(r, APIRoute) and "GET" in r.methods]

    async def statuses() -> dict[str, int]:
        # No lifespan: no agent, no records, just the routes.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            return {path: (await client.get(path)).status_code for path in paths}

    before = asyncio.run(statuses())
    app.state.calls.draining = True
    after = asyncio.run(statuses())
    kinds = {}
    for path in paths:
        if before[path] == 200:
            kinds[path] = "liveness" if after[path] == 200 else "readiness"
    assert sorted(kinds.values()) == ["liveness", "readiness"], kinds
    return kinds


def load_yaml(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} is empty"
    return documents


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind in the manifests kustomize applies."""
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    objects: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in load_yaml(K8S / resource):
            assert document["kind"] not in objects, f"two {document['kind']}s"
            objects[document["kind"]] = document
    return objects


def container() -> dict[str, Any]:
    (only,) = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def pod_env() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container()["env"]}


def fly() -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "fly.toml").read_text())


def render_service() -> dict[str, Any]:
    (service,) = load_yaml(DEPLOY / "render.yaml")[0]["services"]
    return service


def render_env() -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in render_service()["envVars"]}


def procfile_web() -> list[str]:
    processes = dict(
        line.split(":", 1) for line in (DEPLOY / "Procfile").read_text().splitlines() if line
    )
    return processes["web"].split()


def seconds(value: int | str) -> float:
    """A fly.toml duration: 60, or "60s" / "1m"."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, f"unreadable duration {value!r}"
    return int(match[1]) * (60 if match[2] == "m" else 1)


# --- the image -------------------------------------------------------------------------


def test_dockerfile_stages_copy_only_files_that_exist_and_reach_the_build_context() -> None:
    dockerfile = parse_dockerfile(DEPLOY / "Dockerfile")
    names = [stage.name for stage in dockerfile.stages]
    assert len(dockerfile.stages) >= 2, "multi-stage: build tools stay out of the image"
    assert len(set(names)) == len(names), names
    for index, stage in enumerate(dockerfile.stages):
        for instruction in stage.all("COPY"):
            if "from" in instruction.flags:
                earlier = names[:index]
                assert instruction.flags["from"] in earlier, (
                    f"COPY --from={instruction.flags['from']} names no earlier stage {earlier}"
                )
    patterns = dockerignore_patterns()
    copies = context_copies(dockerfile)
    assert copies
    for _stage, source in copies:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not is_dockerignored(source, patterns), f"COPY {source}: .dockerignore drops it"
    # The packages the wheel is made of (pyproject's package list) are all copied.
    sources = {source.rstrip("/") for _stage, source in copies}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in sources, f"{package} is never copied into the image"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= sources


def test_dockerfile_runs_the_bridge_on_python_3_13_slim_as_a_non_root_user() -> None:
    dockerfile = parse_dockerfile(DEPLOY / "Dockerfile")
    final = dockerfile.final
    assert re.fullmatch(r"python:3\.13(\.\d+)?-slim(-\w+)?(@sha256:\w+)?", final.base), final.base
    users = final.all("USER")
    assert users, "the image runs as root"
    user = users[-1].args[0].split(":")[0]
    assert user not in ("root", "0"), user
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user.isdigit(), f"USER {user}: use the numeric uid"
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.raw.startswith("["), "exec form, so SIGTERM reaches the bridge"
    assert entrypoint.args[:2] == ["phone-bridge", "serve"], entrypoint.args
    (stop,) = final.all("STOPSIGNAL")
    assert signal.Signals[stop.args[0]] in HANDLED_SIGNALS, "a signal the bridge drains on"


def test_dockerfile_listens_on_the_app_port_and_checks_liveness(
    probe_kinds: dict[str, str],
) -> None:
    final = parse_dockerfile(DEPLOY / "Dockerfile").final
    env = final.env()
    assert int(env["PORT"]) == DEFAULT_PORT
    assert env.get("HOST") == "0.0.0.0", "reachable from outside the container"
    assert [int(i.args[0]) for i in final.all("EXPOSE")] == [DEFAULT_PORT]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert healthcheck.args[0] == "CMD"
    assert "curl" not in healthcheck.raw and "wget" not in healthcheck.raw, "not on slim"
    assert "PORT" in healthcheck.raw, "follows PORT when a host changes it"
    probed = [p for p in probe_kinds if re.search(re.escape(p) + r"\b", healthcheck.raw)]
    assert [probe_kinds[p] for p in probed] == ["liveness"], probed
    # Records need a writable place for the non-root user; the path is absolute.
    assert env["CALL_DB_PATH"].startswith("/"), env["CALL_DB_PATH"]


def test_dockerfile_gives_the_records_directory_to_the_user_it_runs_as() -> None:
    final = parse_dockerfile(DEPLOY / "Dockerfile").final
    directory = str(PurePosixPath(final.env()["CALL_DB_PATH"]).parent)
    uid, _, gid = final.all("USER")[-1].args[0].partition(":")
    commands = [
        shlex.split(command)
        for run in final.all("RUN")
        for command in re.split(r"&&|;", run.raw)
        if command.strip()
    ]
    # Names the stage's useradd/groupadd give to numeric ids, so `chown bridge:bridge` counts.
    users = {uid: uid}
    groups = {gid: gid} if gid else {}
    for words in commands:
        if words[0] in ("useradd", "groupadd"):
            ids = users if words[0] == "useradd" else groups
            for flag in ("--uid", "-u") if words[0] == "useradd" else ("--gid", "-g"):
                if flag in words:
                    ids[words[-1]] = words[words.index(flag) + 1]
    made = [w for w in commands if w[0] == "mkdir" and directory in w[1:]]
    assert made, f"no RUN mkdir {directory}"
    owners = [w[-2] for w in commands if w[0] == "chown" and w[-1] == directory]
    assert owners, f"no RUN chown ... {directory}"
    user, _, group = owners[-1].partition(":")
    assert users.get(user) == uid, f"chown {owners[-1]}: not USER {uid}"
    if gid and group:
        assert groups.get(group) == gid, f"chown {owners[-1]}: not group {gid}"


# --- variables and secrets ---------------------------------------------------------------


def named_variables() -> dict[str, set[str]]:
    """Every variable each deploy file sets or tells the operator to set."""
    dockerfile = parse_dockerfile(DEPLOY / "Dockerfile")
    fly_text = (DEPLOY / "fly.toml").read_text()
    commented = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", fly_text))
    k8s_secret = load_yaml(K8S / "secret.example.yaml")[0]
    return {
        "Dockerfile": {n for stage in dockerfile.stages for n in stage.env()},
        "fly.toml": set(fly()["env"]) | commented,
        "render.yaml": set(render_env()),
        "Procfile": set(re.findall(r"\$\{?(\w+)", (DEPLOY / "Procfile").read_text())),
        "k8s": set(pod_env()) | set(k8s_secret["stringData"]),
    }


def test_every_variable_a_deploy_file_names_is_one_the_bridge_reads() -> None:
    known = setting_names()
    for where, names in named_variables().items():
        unknown = {n for n in names - known if not RUNTIME_VARIABLES.fullmatch(n)}
        assert not unknown, f"{where} sets {sorted(unknown)}, which the bridge never reads"


def test_each_host_gets_the_variables_a_public_deployment_needs() -> None:
    named = named_variables()
    for where in ("fly.toml", "render.yaml", "k8s"):
        missing = REQUIRED_EVERYWHERE - named[where]
        assert not missing, f"{where} does not set {sorted(missing)}"


def test_no_deploy_file_turns_off_signature_checks() -> None:
    for path in [*DEPLOY.rglob("*"), ROOT / ".dockerignore"]:
        if path.is_file():
            assert "ALLOW_UNSIGNED_TWILIO" not in path.read_text().upper(), path


def test_proxies_are_believed_only_from_private_networks_never_from_anyone() -> None:
    """With FORWARDED_ALLOW_IPS=*, uvicorn takes X-Forwarded-For's leftmost entry, which the
    client writes: a guesser could pass for the operator and lock them out of the console."""
    values = {
        "fly.toml": fly()["env"].get("FORWARDED_ALLOW_IPS"),
        "render.yaml": render_env().get("FORWARDED_ALLOW_IPS", {}).get("value"),
        "k8s": pod_env().get("FORWARDED_ALLOW_IPS", {}).get("value"),
    }
    for where, value in values.items():
        assert value, f"{where}: behind its proxy, every client would look like the proxy"
        networks = [ipaddress.ip_network(part.strip()) for part in value.split(",")]
        assert all(network.is_private for network in networks), f"{where}: {value}"


def test_secrets_only_come_from_the_hosts_secret_stores() -> None:
    secrets = secret_setting_names()
    assert {"OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"} <= secrets
    dockerfile = parse_dockerfile(DEPLOY / "Dockerfile")
    for stage in dockerfile.stages:
        baked = secrets & (set(stage.env()) | {i.args[0].split("=")[0] for i in stage.all("ARG")})
        assert not baked, f"the image bakes in {baked}"
    assert not secrets & set(fly()["env"]), "fly.toml: secrets go in `fly secrets set`"
    for key, entry in render_env().items():
        if key in secrets:
            assert entry.get("sync") is False and "value" not in entry, f"render.yaml: {key}"
    for name, entry in pod_env().items():
        if name in secrets:
            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], name
    example = load_yaml(K8S / "secret.example.yaml")[0]
    assert not any(example["stringData"].values()), "the example Secret holds no values"


def test_the_pod_reads_its_secrets_from_the_example_secrets_keys() -> None:
    example = load_yaml(K8S / "secret.example.yaml")[0]
    refs = [e["valueFrom"]["secretKeyRef"] for e in pod_env().values() if "valueFrom" in e]
    assert refs
    for ref in refs:
        assert ref["name"] == example["metadata"]["name"], ref
        assert ref["key"] in example["stringData"], f"no key {ref['key']} in the Secret"
    required = {ref["key"] for ref in refs if not ref.get("optional")}
    assert {"OPENAI_API_KEY", "TWILIO_AUTH_TOKEN"} <= required, "a pod must not start without"


# --- hosts -------------------------------------------------------------------------------


def test_fly_routes_to_the_app_port_counts_connections_and_waits_for_the_drain(
    probe_kinds: dict[str, str], app_settings: Settings
) -> None:
    config = fly()
    service = config["http_service"]
    env = config["env"]
    assert service["internal_port"] == int(env["PORT"]) == DEFAULT_PORT
    assert service["force_https"] is True, "Twilio's stream needs wss://"
    concurrency = service["concurrency"]
    assert concurrency["type"] == "connections", "a call is one long-lived connection"
    max_calls = int(env.get("MAX_CONCURRENT_CALLS", app_settings.max_concurrent_calls))
    assert concurrency["hard_limit"] > max_calls, "the bridge, not the proxy, answers busy"
    assert [probe_kinds[check["path"]] for check in service["checks"]] == ["liveness"]
    assert service["auto_stop_machines"] in (False, "off"), "a stopped Machine drops calls"
    assert signal.Signals[config["kill_signal"]] in HANDLED_SIGNALS
    grace = float(env.get("SHUTDOWN_GRACE_S", app_settings.shutdown_grace_s))
    assert seconds(config["kill_timeout"]) > grace + GOODBYE_WAIT_S


def test_render_builds_the_image_checks_liveness_and_waits_for_the_drain(
    probe_kinds: dict[str, str], app_settings: Settings
) -> None:
    service = render_service()
    assert service["type"] == "web" and service["runtime"] == "docker"
    assert (ROOT / service["dockerfilePath"]).resolve() == DEPLOY / "Dockerfile"
    assert (ROOT / service["dockerContext"]).resolve() == ROOT
    assert service.get("plan", "free") != "free", "a sleeping service misses calls"
    assert probe_kinds[service["healthCheckPath"]] == "liveness"
    env = render_env()
    assert int(env["PORT"]["value"]) == DEFAULT_PORT
    grace = float(env.get("SHUTDOWN_GRACE_S", {}).get("value", app_settings.shutdown_grace_s))
    delay = service["maxShutdownDelaySeconds"]
    assert grace + GOODBYE_WAIT_S < delay <= RENDER_MAX_SHUTDOWN_DELAY_S


def test_procfile_runs_the_installed_command_on_the_hosts_port() -> None:
    command = procfile_web()
    assert command[:2] == ["phone-bridge", "serve"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options["--port"] == "$PORT", "Procfile hosts assign the port"
    assert options.get("--host", "0.0.0.0") == "0.0.0.0"


# --- Kubernetes --------------------------------------------------------------------------


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}
    assert set(k8s_objects()) == {
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    image = container()["image"]
    assert any(entry["name"] == image for entry in kustomization.get("images", [])), image


def test_each_manifest_uses_the_stable_api_version_of_its_kind() -> None:
    versions = {kind: obj["apiVersion"] for kind, obj in k8s_objects().items()}
    assert versions == {
        "Deployment": "apps/v1",
        "Service": "v1",
        "Ingress": "networking.k8s.io/v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodDisruptionBudget": "policy/v1",
    }
    (secret,) = load_yaml(K8S / "secret.example.yaml")
    assert (secret["apiVersion"], secret["kind"]) == ("v1", "Secret")
    target = k8s_objects()["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["apiVersion"] == versions[target["kind"]]


def test_deployment_probes_readiness_and_liveness_on_the_right_routes(
    probe_kinds: dict[str, str],
) -> None:
    spec = container()
    (port,) = spec["ports"]
    assert port["containerPort"] == int(pod_env()["PORT"]["value"]) == DEFAULT_PORT
    for probe, kind in (
        ("readinessProbe", "readiness"),
        ("livenessProbe", "liveness"),
        ("startupProbe", "liveness"),
    ):
        get = spec[probe]["httpGet"]
        assert probe_kinds[get["path"]] == kind, f"{probe} on {get['path']}"
        assert get["port"] in (port["containerPort"], port["name"]), probe


def test_pods_get_time_to_drain_their_calls(app_settings: Settings) -> None:
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = float(command[1])
    env = pod_env()
    grace = float(env["SHUTDOWN_GRACE_S"]["value"]) if "SHUTDOWN_GRACE_S" in env else None
    grace = app_settings.shutdown_grace_s if grace is None else grace
    # The kubelet's countdown covers the preStop hook, the drain, the goodbyes, and handing
    # the last records to the database (or to the spill file).
    records = ACK_WAIT_S + STOP_DEADLINE_S + RELEASE_DEADLINE_S + FLUSH_AT_CLOSE_S
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace + GOODBYE_WAIT_S + records
    strategy = k8s_objects()["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a rollout never lowers capacity"


def test_service_hpa_and_pdb_point_at_the_deployments_pods() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selects = deployment["spec"]["selector"]["matchLabels"]
    assert selects.items() <= labels.items()
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["selector"] == selects
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == selects
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    # The HPA owns the count: a `replicas` in the Deployment would be put back on every
    # `kubectl apply`, removing pods (and their calls) the HPA had added.
    assert "replicas" not in deployment["spec"], "the HPA sets the replica count"
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # Even at minReplicas, the PDB lets a node drain evict one pod and keeps one up.
    if "minAvailable" in pdb:
        assert "maxUnavailable" not in pdb
        assert 1 <= pdb["minAvailable"] <= hpa["minReplicas"] - 1, pdb
    else:
        assert 1 <= pdb["maxUnavailable"] <= hpa["minReplicas"] - 1, pdb
    # The Service forwards to the container's port, by number or by name.
    spec = container()
    (port,) = spec["ports"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["containerPort"], port["name"])


def test_ingress_keeps_call_websockets_open_and_routes_to_the_service(
    app_settings: Settings,
) -> None:
    objects = k8s_objects()
    ingress = objects["Ingress"]
    annotations = ingress["metadata"]["annotations"]
    ping_s = server_config(create_app(app_settings), app_settings).ws_ping_interval
    assert ping_s
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        timeout = int(annotations[f"nginx.ingress.kubernetes.io/{name}"])
        # Idle timeouts: the bridge's pings must arrive well within them.
        assert timeout >= 3 * ping_s, f"{name} {timeout}s"
    assert ingress["spec"]["tls"], "Twilio's stream needs wss://"
    service = objects["Service"]
    (service_port,) = service["spec"]["ports"]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            ((by, value),) = backend["port"].items()
            assert {"name": service_port.get("name"), "number": service_port["port"]}[by] == value
    # PUBLIC_URL is the ingress host: signatures are checked against it.
    host = ingress["spec"]["rules"][0]["host"]
    assert pod_env()["PUBLIC_URL"]["value"] == f"https://{host}"
    # A controller reload closes old workers' WebSockets after worker-shutdown-timeout: the
    # value the file tells operators to set outlasts the longest call.
    advice = re.search(r'worker-shutdown-timeout: "(\d+)s"', (K8S / "ingress.yaml").read_text())
    assert advice, "ingress.yaml: say what to set worker-shutdown-timeout to"
    env = pod_env()
    longest = float(
        env.get("MAX_CALL_DURATION_S", {}).get("value", app_settings.max_call_duration_s)
    )
    assert int(advice[1]) >= longest, f"worker-shutdown-timeout {advice[1]}s < {longest}s"
