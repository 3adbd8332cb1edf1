"""deploy/ held to the service it deploys, without Docker (none runs on these machines).

compose.yaml sets only real settings and runs only real commands; the Dockerfile is multi-stage,
non-root, checked on /readyz, with no compiler in its final image; the proxy configs carry what
SSE needs; the dashboard, the alerts and docs/operations.md name only metrics the service
exposes. tests/test_proxy.py runs nginx.conf for real.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import uuid4

import pytest
import yaml

from service.cli.arguments import parser
from service.observe import metrics
from service.settings import PROJECT_ROOT, Settings, environment_variable

DEPLOY = PROJECT_ROOT / "deploy"
SCRAPE_LABELS = frozenset({"job", "instance", "role"})
REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}$")  # ${NAME}, ${NAME:?why}...
SECRET_NAME = re.compile(r"SECRET|PASSWORD|API_KEY")
DEFAULT_KEEPALIVE_S = Settings.model_fields["keepalive_s"].default
DEFAULT_IDLE_TIMEOUT_S = Settings.model_fields["keepalive_timeout_s"].default


# --- compose.yaml ------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def genstream_services() -> dict[str, dict[str, Any]]:
    """The services that run the image deploy/Dockerfile builds."""
    return {
        name: service
        for name, service in services().items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def running(command: str) -> list[str]:
    return [
        name for name, service in genstream_services().items() if service["command"] == [command]
    ]


def settings_variables() -> set[str]:
    return {environment_variable(field) for field in Settings.model_fields}


def test_compose_runs_postgres_15_with_a_volume_then_migrate_then_two_serve_one_worker_nginx() -> (
    None
):
    postgres = services()["postgres"]
    assert postgres["image"].startswith("postgres:15")
    volume, _, path = next(v for v in postgres["volumes"] if v.startswith("pgdata:")).partition(":")
    assert path == "/var/lib/postgresql/data"
    assert volume in compose()["volumes"]
    assert running("migrate") == ["migrate"]
    assert len(running("serve")) == 2
    assert len(running("worker")) == 1
    assert services()["nginx"]["image"].startswith("nginx:")


def test_migrations_run_once_before_every_other_genstream_process() -> None:
    migrate = services()["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, service in genstream_services().items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


@pytest.mark.parametrize("name", sorted(genstream_services()))
def test_each_command_is_a_command_of_the_cli(name: str) -> None:
    command = genstream_services()[name]["command"]
    try:
        parsed = parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"{name}: `python -m service {' '.join(command)}` is not a command")
    assert parsed.command == command[0]


@pytest.mark.parametrize("name", sorted(genstream_services()))
def test_every_variable_set_is_a_setting(name: str) -> None:
    known = settings_variables()
    unknown = [
        variable for variable in genstream_services()[name]["environment"] if variable not in known
    ]
    assert not unknown, f"{name} sets variables no setting reads: {unknown}"


def test_serve_processes_share_one_stream_token_secret_and_listen_where_nginx_sends() -> None:
    serves = {name: genstream_services()[name]["environment"] for name in running("serve")}
    secrets = {environment["GENSTREAM_STREAM_TOKEN_SECRET"] for environment in serves.values()}
    assert len(secrets) == 1, "a token issued by one serve must verify on the other"
    assert all(REFERENCE.match(secret) for secret in secrets)
    listening = {f"{name}:{environment['PORT']}" for name, environment in serves.items()}
    assert {environment["HOST"] for environment in serves.values()} == {"0.0.0.0"}  # noqa: S104
    assert upstream_servers() == listening
    assert caddy_upstreams() == listening


def test_no_secret_is_written_in_compose_only_referenced() -> None:
    for name, service in services().items():
        for variable, value in dict(service.get("environment", {})).items():
            if SECRET_NAME.search(variable):
                assert REFERENCE.match(str(value)), f"{name}: {variable} must be ${{...}}"
            if variable == "DATABASE_URL":
                password = re.search(r"://[^:/@]+:(?P<password>[^@]+)@", value)
                assert password, f"{name}: DATABASE_URL needs a password"
                assert REFERENCE.match(password["password"]), f"{name}: a literal password"


def test_every_required_variable_is_in_the_env_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=$", example, re.MULTILINE))
    assert required, "the secrets are required: ${NAME:?why}"
    assert required <= listed, f"not in .env.example (or given a value there): {required - listed}"


def test_the_worker_is_checked_on_its_metrics_address() -> None:
    (worker,) = running("worker")
    address = genstream_services()[worker]["environment"]["GENSTREAM_METRICS_ADDRESS"]
    check = " ".join(genstream_services()[worker]["healthcheck"]["test"])
    assert f"127.0.0.1:{address.rpartition(':')[2]}/metrics" in check


def test_mounted_files_exist_and_nginx_is_new_enough_for_resolve() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts {source}, which is missing"
    major, minor = (int(part) for part in services()["nginx"]["image"].split(":")[1].split(".")[:2])
    assert (major, minor) >= (1, 27), "`server ... resolve` in an upstream needs nginx 1.27.3+"


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, rest of the line)


def dockerfile_stages() -> list[Stage]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip(), []))
        elif stages:
            stages[-1].instructions.append((instruction.upper(), rest.strip()))
    return stages


def final_stage(instruction: str) -> list[str]:
    return [rest for name, rest in dockerfile_stages()[-1].instructions if name == instruction]


BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|cc|[\w.+-]+-dev|python3-dev|git|rustc|cargo)\b"
)


def test_dockerfile_has_stages_and_a_final_one_without_build_tools() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert final.base not in {stage.name for stage in stages[:-1]}, "FROM a fresh base image"
    assert any(rest.startswith("--from=") for rest in final_stage("COPY"))
    installs = [rest for rest in final_stage("RUN") if re.search(r"apt-get install|apk add", rest)]
    assert not [rest for rest in installs if BUILD_TOOLS.search(rest)]
    assert any(BUILD_TOOLS.search(rest) for _, rest in stages[0].instructions), (
        "the build stage is where a compiler may live (this test must see the pattern work)"
    )


def test_dockerfile_runs_as_a_user_other_than_root() -> None:
    (user,) = final_stage("USER")
    assert user.split(":")[0] not in {"root", "0"}


def test_dockerfile_healthcheck_asks_readyz_and_the_default_command_serves() -> None:
    (healthcheck,) = final_stage("HEALTHCHECK")
    assert "/readyz" in healthcheck
    (entrypoint,) = final_stage("ENTRYPOINT")
    (command,) = final_stage("CMD")
    assert json.loads(entrypoint) == ["python", "-m", "service"]
    assert parser().parse_args(json.loads(command)).command == "serve"


def test_the_image_installs_the_python_client_that_follow_runs_on() -> None:
    (build, *_) = dockerfile_stages()
    copies = [rest.split() for name, rest in build.instructions if name == "COPY"]
    assert ["clients/python", "./clients/python"] in copies
    runs = " ".join(rest for name, rest in build.instructions if name == "RUN")
    assert "pip install ./clients/python" in runs
    assert parser().parse_args(["follow", str(uuid4())]).command == "follow"


def test_the_build_context_lets_through_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    for stage in dockerfile_stages():
        for name, rest in stage.instructions:
            if name == "COPY" and not rest.startswith("--from="):
                *sources, _ = rest.split()
                assert set(sources) <= allowed, f"COPY {sources}: not in the build context"
                assert all((PROJECT_ROOT / source).exists() for source in sources)


# --- nginx.conf and the Caddyfile ---------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None


def parse_nginx(text: str) -> list[Directive]:
    """nginx's grammar, enough for this file: directives, quoted arguments, blocks, comments."""
    text = re.sub(r"(^|\s)#.*$", r"\1", text, flags=re.MULTILINE)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{};]|[^\s{};]+', text)
    root: list[Directive] = []
    stack, words = [root], list[str]()
    for token in tokens:
        if token in {";", "{"}:
            directive = Directive(words[0], words[1:])
            stack[-1].append(directive)
            if token == "{":
                directive.block = []
                stack.append(directive.block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "\"'" else token)
    assert len(stack) == 1, "unbalanced braces"
    return root


@cache
def nginx_conf() -> tuple[Directive, ...]:
    return tuple(parse_nginx((DEPLOY / "nginx.conf").read_text()))


def children(directives: Any, name: str) -> Iterator[Directive]:
    return (directive for directive in directives if directive.name == name)


def upstream_block() -> list[Directive]:
    (upstream,) = (d for d in children(nginx_conf(), "upstream") if d.args == ["genstream"])
    assert upstream.block is not None
    return upstream.block


def upstream_servers() -> set[str]:
    return {directive.args[0] for directive in children(upstream_block(), "server")}


def stream_location() -> tuple[list[Directive], Directive]:
    """The server block's directives, and the location that matches a stream's path."""
    (server,) = children(nginx_conf(), "server")
    assert server.block is not None
    path = f"/api/generations/{uuid4()}/stream"
    matching = [
        location
        for location in children(server.block, "location")
        if location.args[0] == "~" and re.search(location.args[1], path)
    ]
    assert len(matching) == 1, "one regex location for the stream"
    return server.block, matching[0]


def setting(name: str) -> list[list[str]]:
    """The arguments of ``name`` in force in the stream's location (its own, else the
    server's, else http's: how these directives inherit)."""
    server, location = stream_location()
    assert location.block is not None
    for level in (location.block, server, list(nginx_conf())):
        found = [directive.args for directive in children(level, name)]
        if found:
            return found
    return []


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit or "s"]
    return int(number) * scale


def test_nginx_streams_unbuffered_uncached_uncompressed_over_http_1_1() -> None:
    assert setting("proxy_buffering") == [["off"]]
    assert setting("proxy_cache") == [["off"]]
    assert setting("gzip") == [["off"]]
    assert all("text/event-stream" not in args for args in setting("gzip_types"))
    assert setting("proxy_http_version") == [["1.1"]]
    assert setting("proxy_pass") == [["http://genstream"]]
    _, location = stream_location()
    assert not re.search(location.args[1], f"/api/generations/{uuid4()}/events")


def test_nginx_waits_longer_than_a_stream_can_be_silent() -> None:
    keepalive_s = max(
        float(service["environment"].get("GENSTREAM_KEEPALIVE_S", DEFAULT_KEEPALIVE_S))
        for service in genstream_services().values()
    )
    ((read_timeout,),) = setting("proxy_read_timeout")
    assert seconds(read_timeout) >= max(60.0, 4 * keepalive_s)


def test_nginx_forwards_the_client_and_keeps_upstream_connections_alive() -> None:
    headers = {args[0].lower(): args[1] for args in setting("proxy_set_header")}
    assert headers["connection"] == ""
    assert headers["host"] == "$host"
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert headers["x-forwarded-proto"] == "$scheme"
    assert "x-request-id" in headers
    ((idle,),) = [d.args for d in children(upstream_block(), "keepalive_timeout")]
    assert seconds(idle) < DEFAULT_IDLE_TIMEOUT_S, "nginx must drop idle connections first"
    assert next(children(upstream_block(), "least_conn"), None) is not None


def test_nginx_main_config_has_room_for_streams_and_bounds_a_reload() -> None:
    main = parse_nginx((DEPLOY / "nginx-main.conf").read_text())
    (events,) = children(main, "events")
    assert events.block is not None
    ((connections,),) = [d.args for d in children(events.block, "worker_connections")]
    ((files,),) = [d.args for d in children(main, "worker_rlimit_nofile")]
    assert int(connections) >= 4096, "a stream is two connections in nginx"
    assert int(files) >= int(connections)
    ((timeout,),) = [d.args for d in children(main, "worker_shutdown_timeout")]
    assert seconds(timeout) <= 60, "a reload must not wait for streams to end by themselves"
    (http,) = children(main, "http")
    assert [d.args for d in children(http.block, "include")][-1] == ["/etc/nginx/conf.d/*.conf"]
    mounts = services()["nginx"]["volumes"]
    assert "./nginx-main.conf:/etc/nginx/nginx.conf:ro" in mounts
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in mounts


def caddy_upstreams() -> set[str]:
    (line,) = re.findall(r"^\s*reverse_proxy (.+) \{$", caddyfile(), re.MULTILINE)
    return set(line.split())


@cache
def caddyfile() -> str:
    return re.sub(r"#.*$", "", (DEPLOY / "Caddyfile").read_text(), flags=re.MULTILINE)


def test_caddy_flushes_every_frame_over_http_1_1_and_never_compresses_a_stream() -> None:
    words = caddyfile().split()
    assert "flush_interval -1" in " ".join(words)
    assert "versions 1.1" in " ".join(words)
    (read_timeout,) = re.findall(r"read_timeout (\S+)", caddyfile())
    assert seconds(read_timeout) >= 60
    (encode,) = re.findall(r"encode \{(.*?)\n\t\}", caddyfile(), re.DOTALL)
    assert "match" in encode, "without a match, encode compresses text/*: the streams too"
    assert "event-stream" not in encode
    assert "text/*" not in encode


# --- metrics: the dashboard, the alerts, the operations guide -----------------------------------


@cache
def exposed() -> dict[str, frozenset[str]]:
    """Every series name a process exposes, with the labels it may carry: counters get
    ``_total``, histograms ``_bucket`` (with ``le``), ``_sum`` and ``_count``."""
    labels: dict[str, frozenset[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, metrics.Counter):
            labels[f"{metric.name}_total"] = frozenset(metric.label_names)
        elif isinstance(metric, metrics.Histogram):
            for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
                labels[metric.name + suffix] = frozenset(metric.label_names) | extra
        elif isinstance(metric, metrics.Gauge):
            labels[metric.name] = frozenset(metric.labels)
    assert {name.rsplit("_", 1)[0] for name in labels} | set(labels) >= set(metrics.names())
    for family in metrics.REGISTRY.collect():  # the process collector's own
        for sample in family.samples:
            labels.setdefault(sample.name, frozenset(sample.labels))
    return labels


SERIES = re.compile(r"\b((?:genstream|process)_[a-z0-9_]+)\b(\{[^}]*\})?")


def check_series(expressions: list[str], where: str, *, families: bool = False) -> int:
    """Every series the expressions select exists, with labels it has (with ``families``, a
    histogram may also go by its own name, as prose calls it); how many were checked."""
    known = set(exposed())
    if families:
        known |= {name.removesuffix("_bucket") for name in exposed() if name.endswith("_bucket")}
    checked = 0
    for expression in expressions:
        for name, selector in SERIES.findall(expression):
            assert name in known, f"{where}: {name} is not exposed (in: {expression[:200]})"
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
            unknown = used - exposed().get(name, frozenset()) - SCRAPE_LABELS
            assert not unknown, f"{where}: {name} has no label {unknown}"
            checked += 1
    return checked


def expressions_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions_in(item)


def test_the_dashboard_uses_only_exposed_metrics_and_their_labels() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    expressions = list(expressions_in(dashboard["panels"]))
    assert check_series(expressions, "grafana-dashboard.json") > 40
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert any("histogram_quantile(0.99" in expression for expression in expressions)


def test_the_alerts_use_only_exposed_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert all(rule.get("alert") for group in rules["groups"] for rule in group["rules"])
    assert check_series(expressions, "alerts.yml") >= 8


def test_the_operations_guide_names_only_exposed_metrics() -> None:
    text = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert check_series([text], "docs/operations.md", families=True) >= 8
