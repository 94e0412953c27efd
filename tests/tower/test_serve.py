"""`tower serve` as one command: the banner names every address and the tokens; the dashboard runs as a child
and SIGTERM stops it with the server (no process left); `--no-dashboard` and a taken dashboard port start none;
children stop in reverse order and none starts after the stop; `--demo`'s settings are defaults only and its
Slack stand-in is used only without a Slack token. The whole `--demo` loop is tests/test_end_to_end.py."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from kernel.settings import Settings
from tests.factories import make_settings
from tests.support import free_port, run_tower, wait_for
from tower.child_guard import guarded
from tower.children import Child, Children
from tower.cli import main
from tower.dashboard_process import DashboardProcessSettings
from tower.demo_mode import DEMO_JOBS, DEMO_OPERATOR, DEMO_SLACK_USER, apply_defaults, start_local_slack
from tower.server import banner, dashboard_child


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(status.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(status.parent.name))
    return found


def gone(pid: int) -> bool:
    """The process does not exist (or is a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@contextlib.contextmanager
def serve(tmp_path: Path, *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    """`tower serve ARGS` on free ports and its own data directory, until it answers; killed if still running."""
    ports = {"http": free_port(), "grpc": free_port(), "dashboard": free_port()}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    environment.update(
        TOWER_STORE_DATA_DIR=str(tmp_path / "data"),
        TOWER_COLLECTOR_HTTP_PORT=str(ports["http"]),
        TOWER_COLLECTOR_GRPC_PORT=str(ports["grpc"]),
        TOWER_DASHBOARD_PORT=str(ports["dashboard"]),
        TOWER_DASHBOARD_STATE_DIR=str(tmp_path / "dashboard-state"),
        TOWER_SCHEDULER_ENABLED="false",
    )
    environment.update(env)
    log = tmp_path / "serve.log"
    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tower", "serve", *args], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    urls = {name: str(port) for name, port in ports.items()} | {"dashboard": environment["TOWER_DASHBOARD_PORT"]}
    try:

        def api_up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return httpx.get(f"http://127.0.0.1:{ports['http']}/healthz", timeout=1).status_code == 200

        wait_for("the API", api_up, 90, log, interval=0.1)
        yield proc, log, urls
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_serve_runs_the_dashboard_and_sigterm_stops_both(tmp_path: Path) -> None:
    with serve(tmp_path) as (proc, log, ports):
        dashboard = f"http://127.0.0.1:{ports['dashboard']}"

        wait_for(
            "the dashboard", lambda: httpx.get(f"{dashboard}/_stcore/health", timeout=2).text == "ok", 60, log, 0.2
        )
        text = log.read_text()
        tokens = json.loads((tmp_path / "data" / "tokens.json").read_text())
        (admin,) = tokens["api"]
        assert f"  dashboard  {dashboard}  (log: {tmp_path / 'data' / 'dashboard.log'})" in text
        assert f"  admin      {admin}  (API token" in text
        assert "  Slack      not configured: alerts wait in the outbox" in text
        assert "Ctrl-C stops everything." in text
        (child,) = children_of(proc.pid)
        assert "streamlit" in Path(f"/proc/{child}/cmdline").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert gone(child)
    assert "dashboard stopped (exit 0)" in log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{dashboard}/_stcore/health", timeout=2)


@pytest.mark.slow
def test_no_dashboard_and_a_taken_port_start_none(tmp_path: Path) -> None:
    with serve(tmp_path / "off", "--no-dashboard") as (proc, log, _):
        time.sleep(1)
        # what the tower creates is its user's alone: the store, the spool, the raw records
        for made in (tmp_path / "off" / "data", tmp_path / "off" / "data" / "clickhouse"):
            assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0, made
        assert children_of(proc.pid) == []
        assert "\n  dashboard  " not in log.read_text()
        assert "Ctrl-C stops the tower." in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        with serve(tmp_path / "taken", TOWER_DASHBOARD_PORT=port, TOWER_SCHEDULER_ENABLD="false") as (proc, log, _):
            time.sleep(1)
            assert children_of(proc.pid) == []
            assert f"  dashboard  not started: 127.0.0.1:{port} is in use" in log.read_text()
            assert (
                "TOWER_SCHEDULER_ENABLD is not a setting: ignored (did you mean TOWER_SCHEDULER_ENABLED?)"
                in log.read_text()
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0


@pytest.mark.slow
def test_a_setting_refused_at_start_leaves_the_schema_as_it_was(tmp_path: Path) -> None:
    """The settings of the jobs (and retention, alerting, reports) are read before the store migrates: a typo during
    an upgrade does not move the schema on (a migration has no way back). In processes of their own (each would
    open a data directory), run side by side, each with a data directory of its own."""
    cases = [
        (name, value, command)
        for name, value in [
            ("TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS", "-5"),
            ("TOWER_REPORTS_TIMEZONE", "Mars/Olympus"),
            ("TOWER_METRICS_ENABLED", "maybe"),
            ("TOWER_JOB_REPLAY_SEND_INTERVAL_SECONDS", "0"),  # a job whose model is made when it is registered
        ]
        for command in ("serve", "migrate")
    ]

    def refused(case: tuple[int, tuple[str, str, str]]) -> tuple[Path, subprocess.CompletedProcess[str]]:
        index, (name, value, command) = case
        data = tmp_path / f"data-{index}"
        env = {name: value, "TOWER_COLLECTOR_HTTP_PORT": str(free_port()), "TOWER_COLLECTOR_GRPC_PORT": "0"}
        extra = ["--no-dashboard"] if command == "serve" else []
        return data, run_tower(command, *extra, "--data-dir", str(data), env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(refused, enumerate(cases)))
    for (name, value, command), (data, result) in zip(cases, results, strict=True):
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == f"Error: invalid settings:\n  {name}='{value}': " + result.stderr.split(": ", 2)[2]
        assert "applied" not in result.stderr + result.stdout
        # refused before anything is created: no data directory, tokens, spool or store left behind
        assert not data.exists(), (command, sorted(p.name for p in data.iterdir()))


@pytest.mark.slow
def test_a_second_tower_on_the_same_store_or_ports_stops_with_one_line(tmp_path: Path) -> None:
    """Beside a running tower: the same data directory (other ports), the same ports (another directory) and
    `tower migrate` on its store each exit 1 with one line saying what is in use, and open nothing."""
    with serve(tmp_path / "first", "--no-dashboard") as (proc, log, ports):
        first = tmp_path / "first" / "data"

        def tower(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
            return run_tower(*args, env={"TOWER_SCHEDULER_ENABLED": "false", **env})

        other = ["--port", str(free_port()), "--grpc-port", str(free_port())]
        same_store = tower("serve", "--no-dashboard", "--data-dir", str(first), *other)
        assert same_store.returncode == 1, same_store.stderr
        assert same_store.stderr.startswith(
            f"Error: the embedded store at {first / 'clickhouse'} is in use by another process (PID {proc.pid},"
        )
        assert "Traceback" not in same_store.stderr + same_store.stdout
        assert "Code: 76" not in same_store.stderr  # the engine is not asked: its own refusal is obscure

        migrate = tower("migrate", TOWER_STORE_DATA_DIR=str(first))
        assert migrate.returncode == 1
        assert f"is in use by another process (PID {proc.pid}," in migrate.stderr

        second = tmp_path / "second"
        same_ports = tower(
            "serve", "--no-dashboard", "--data-dir", str(second), "--port", ports["http"], "--grpc-port", ports["grpc"]
        )
        assert same_ports.returncode == 1
        assert same_ports.stderr == (
            f"Error: 127.0.0.1:{ports['http']} is in use by another process (another tower?) (HTTP: --port,"
            f" TOWER_COLLECTOR_HTTP_PORT); 127.0.0.1:{ports['grpc']} is in use by another process (another tower?)"
            " (OTLP/gRPC: --grpc-port, TOWER_COLLECTOR_GRPC_PORT; 0 disables it)\n"
        )
        assert not second.exists()  # nothing opened, no tokens generated

        assert httpx.get(f"http://127.0.0.1:{ports['http']}/healthz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_invalid_settings_stop_serve_with_one_line_per_problem(tmp_path: Path) -> None:
    env = {"TOWER_COLLECTOR_HTTP_PORT": "abc", "TOWER_API_TOKENS": json.dumps({"sh0rt-s3cret": "admin"})}
    result = CliRunner().invoke(main, ["serve", "--no-dashboard", "--data-dir", str(tmp_path / "data")], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: invalid settings:\n  TOWER_COLLECTOR_HTTP_PORT='abc': Input should be")
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # nothing opened

    # the dashboard's own settings are read before anything starts, not first in a visitor's page
    bad_page = {"TOWER_DASHBOARD_PAGE_SIZE": "5"}
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "data")], env=bad_page)
    assert result.exit_code == 1 and not (tmp_path / "data").exists()
    assert result.output == (
        "Error: invalid settings:\n  TOWER_DASHBOARD_PAGE_SIZE='5': Input should be greater than or equal to 10\n"
    )
    result = CliRunner().invoke(main, ["dashboard"], env=bad_page)
    assert result.exit_code == 1 and "TOWER_DASHBOARD_PAGE_SIZE='5'" in result.output

    # the ports' own settings: one port for both servers, port 0, a host that is not this machine's
    port = str(free_port())
    for ports, expected in [
        (
            {"TOWER_COLLECTOR_HTTP_PORT": port, "TOWER_COLLECTOR_GRPC_PORT": port},
            f"Error: HTTP and OTLP/gRPC both on port {port} (--port, TOWER_COLLECTOR_HTTP_PORT; --grpc-port,"
            " TOWER_COLLECTOR_GRPC_PORT, 0 disables gRPC): give each its own\n",
        ),
        (
            {"TOWER_COLLECTOR_HTTP_PORT": "0"},
            "Error: the HTTP port is 0 (--port, TOWER_COLLECTOR_HTTP_PORT): OTLP/HTTP senders, the CLI and the"
            " dashboard need a port they can find\n",
        ),
        (
            {"TOWER_COLLECTOR_HOST": "no.such.host.invalid", "TOWER_COLLECTOR_HTTP_PORT": port},
            "Error: cannot listen on 'no.such.host.invalid' (--host, TOWER_COLLECTOR_HOST): ",
        ),
    ]:
        result = CliRunner().invoke(main, ["serve", "--no-dashboard", "--data-dir", str(tmp_path / "data")], env=ports)
        assert result.exit_code == 1 and result.output.startswith(expected), result.output
        assert not (tmp_path / "data").exists()

    result = CliRunner().invoke(main, ["serve", "--no-dashboard"], env={"TOWER_API_TOKENS": env["TOWER_API_TOKENS"]})
    assert result.exit_code == 1
    assert result.output == (
        "Error: invalid settings:\n  TOWER_API_TOKENS: Value error, API tokens must be at least 16 characters\n"
    )  # the token itself is not repeated

    # nor when it is where the problem is: a token is a key of the map
    tokens = {
        "TOWER_API_TOKENS": json.dumps({"SECRETtoken-0123456789": 5}),
        "TOWER_INGEST_TOKENS": json.dumps({"b" * 24: "wms"}),
    }
    result = CliRunner().invoke(main, ["serve", "--no-dashboard", "--data-dir", str(tmp_path / "data")], env=tokens)
    assert result.exit_code == 1 and not (tmp_path / "data").exists()
    assert result.output.startswith(
        "Error: invalid settings:\n  TOWER_INGEST_TOKENS (at <token 1>): Input should be a valid list\n"
        "  TOWER_API_TOKENS (at <token 1>): Input should be 'viewer', 'operator', 'finance' or 'admin'\n"
    )
    assert "SECRET" not in result.output and "bbbb" not in result.output


@pytest.mark.slow
def test_a_job_setting_out_of_range_stops_serve_before_it_serves(tmp_path: Path) -> None:
    serve_args = ["serve", "--no-dashboard", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
    result = run_tower(*serve_args, "--grpc-port", "0", env={"TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS": "-1"})
    assert result.returncode == 1
    assert result.stderr.endswith(
        "Error: invalid settings:\n  TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS='-1': Input should be greater than 0\n"
    )
    assert "Control tower" not in result.stdout  # no banner: it never served
    assert "Traceback" not in result.stderr


def test_an_unusable_data_directory_stops_serve_with_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    ports = ["--port", str(free_port()), "--grpc-port", "0", "--no-dashboard"]
    for data_dir, reason in ((taken, "File exists"), (taken / "data", "Not a directory")):
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir), *ports])
        assert result.exit_code == 1
        assert result.output == (
            f"Error: cannot use the data directory {data_dir}: {reason} (--data-dir, TOWER_STORE_DATA_DIR)\n"
        )


def test_demo_needs_the_role_all(tmp_path: Path) -> None:
    env = {
        "TOWER_ROLE": "api",
        "TOWER_STORE_BACKEND": "server",
        "TOWER_STORE_URL": "http://tower:secret@127.0.0.1:1",
        "TOWER_API_TOKENS": json.dumps({"a" * 24: "admin"}),
    }
    result = CliRunner().invoke(main, ["serve", "--demo", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 1
    assert "--demo runs the whole tower in one process: it needs the role all, not api" in result.output


def test_the_banner_lists_the_services_and_the_admin_token(tmp_path: Path) -> None:
    configured = make_settings(tmp_path / "data", http_port=4318, grpc_port=4317)
    assert "  tokens     configured (TOWER_INGEST_TOKENS, TOWER_API_TOKENS)" in banner(configured).splitlines()
    settings = make_settings(tmp_path / "data", http_port=4318, grpc_port=4317)  # a local start: tokens generated
    text = banner(settings, "all", [("dashboard", "http://127.0.0.1:8501"), ("Slack", "local stand-in")], "tok", True)
    lines = text.splitlines()
    assert lines[0] == "Control tower"
    assert lines.index("  API        http://127.0.0.1:4318/api  (OpenAPI: http://127.0.0.1:4318/docs)") < lines.index(
        "  dashboard  http://127.0.0.1:8501"
    )
    assert lines[-2:] == [
        f"  tokens     {tmp_path / 'data' / 'tokens.json'}",
        "  admin      tok  (API token: sign in to the dashboard, call the API)",
    ]
    assert "  admin  " not in banner(settings, "all")  # without a generated token, none is printed


def test_a_child_that_dies_is_started_again_with_backoff_until_stopped(tmp_path: Path) -> None:
    """The dashboard is restarted after a crash (kill -9, an exception in Streamlit), waiting longer each time;
    a child that is stopped is not."""
    crash = [sys.executable, "-c", "import sys; print('crashing'); sys.exit(3)"]
    child = Child("crashy", crash, os.environ, tmp_path / "crashy.log", restart=True, first_delay=0.05, max_delay=0.4)
    children = Children()
    assert children.start(child)
    wait_for("three restarts", lambda: child.restarts >= 3, timeout=30, interval=0.05)
    children.stop_all()
    after = child.restarts
    time.sleep(1)  # longer than the longest backoff: nothing starts it again
    assert child.restarts == after and not child.running
    assert after <= (tmp_path / "crashy.log").read_text().count("crashing") <= after + 1  # the last may be stopped

    once = Child("once", crash, os.environ, tmp_path / "once.log")  # the demo: not restarted
    once.start()
    assert once.proc is not None and once.proc.wait(timeout=30) == 3
    time.sleep(0.3)
    assert once.restarts == 0 and not once.running


def test_a_stop_signal_to_the_whole_group_is_no_crash_but_one_the_tower_did_not_follow_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C or a service manager signals the tower's whole process group: a child ends by the signal just before
    the tower stops it. That is not logged as an unexpected exit, nor restarted; the same signal with no stop
    behind it is, once the window has passed."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    caplog.set_level(logging.WARNING, logger="tower.children")

    def signalled(name: str) -> tuple[Child, Children]:
        child = Child(name, sleep, os.environ, tmp_path / f"{name}.log", restart=True, stop_window=0.5)
        children = Children()
        assert children.start(child) and child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(timeout=30) == -signal.SIGTERM
        return child, children

    child, children = signalled("stopped")
    time.sleep(0.1)  # the tower's handler runs a moment after the children got the signal
    children.stop_all()
    time.sleep(1)  # past the window
    assert child.restarts == 0 and "exited with" not in caplog.text

    child, children = signalled("alone")
    wait_for("the restart", lambda: child.restarts == 1, timeout=30, interval=0.05)
    assert f"alone exited with -{int(signal.SIGTERM)}" in caplog.text
    children.stop_all()


def test_children_stop_in_reverse_order_and_none_starts_after(tmp_path: Path) -> None:
    children = Children()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    first, second = (
        Child("first", sleep, os.environ, tmp_path / "1.log"),
        Child("second", sleep, os.environ, tmp_path / "2.log"),
    )
    assert children.start(first) and children.start(second)
    assert first.running and second.running
    stopped: list[str] = []
    for child in (first, second):
        original = child.stop

        def record(grace_seconds: float = 10.0, child: Child = child, original: object = original) -> int | None:
            stopped.append(child.name)
            assert callable(original)
            code: int | None = original(grace_seconds)
            return code

        child.stop = record  # type: ignore[method-assign]
    children.stop_all()
    assert stopped == ["second", "first"]
    assert not first.running and not second.running and first.proc is not None and first.proc.returncode == -15
    late = Child("late", sleep, os.environ, tmp_path / "3.log")
    assert not children.start(late) and late.proc is None
    assert not children.unless_closed(lambda: None)
    children.stop_all()  # idempotent


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = Child(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True);"
            " time.sleep(60)",
        ],
        os.environ,
        tmp_path / "stubborn.log",
    )
    stubborn.start()
    wait_for("the stubborn child", lambda: "up" in stubborn.tail(), 30, interval=0.2)
    assert stubborn.stop(grace_seconds=0.5) == -signal.SIGKILL


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by init, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_python_child_ends_when_the_tower_is_killed(tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"
    command = [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]
    assert guarded(command, 42)[:5] == [sys.executable, "-m", "tower.child_guard", "42", "http.server"]
    assert guarded(["/bin/true"]) == ["/bin/true"] and guarded(guarded(command, 42), 7) == guarded(command, 42)
    # a stand-in for the tower: starts the child as `tower serve` does, says its pid, waits to be killed
    tower = (
        "import os, sys, time; from pathlib import Path; from tower.children import Child;"
        f" child = Child('server', {command!r}, os.environ, Path({str(log_path)!r})); child.start();"
        " print(child.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", tower], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        wait_for("the child serving", lambda: "Serving HTTP" in log_path.read_text(), 30, interval=0.2)
        parent.kill()  # SIGKILL: the tower stops nothing
        parent.wait(10)
        assert _alive(pid)  # orphaned, still running for now
        wait_for("the orphaned child to end", lambda: not _alive(pid), 30, interval=0.2)
    finally:
        parent.kill()
        parent.wait(10)


def test_the_guard_refuses_a_bad_command_line_and_a_gone_parent() -> None:
    run = [sys.executable, "-m", "tower.child_guard"]
    assert subprocess.run([*run, "http.server"], capture_output=True, text=True).returncode == 2
    # the parent given is not this process's parent: the module never runs (it would serve forever)
    assert subprocess.run([*run, "1", "http.server", "0"], capture_output=True, timeout=30).returncode == 1


def test_demo_settings_are_defaults_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEMO_JOBS:  # unset now, and unset again after the test (what apply_defaults sets included)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOWER_JOB_RECONCILE_INTERVAL_SECONDS", "120")
    applied = apply_defaults(DEMO_JOBS)
    assert "TOWER_JOB_RECONCILE_INTERVAL_SECONDS" not in applied
    assert os.environ["TOWER_JOB_RECONCILE_INTERVAL_SECONDS"] == "120"
    assert os.environ["TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS"] == DEMO_JOBS["TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS"]


def test_the_local_slack_stand_in_only_without_slack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings: Settings = make_settings(tmp_path / "data")
    for name in (
        "TOWER_SLACK_BOT_TOKEN",
        "TOWER_SLACK_WEBHOOK_URL",
        "TOWER_SLACK_WEBHOOK_URLS",
        "TOWER_SLACK_SIGNING_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    local = start_local_slack(settings, "http://127.0.0.1:1/slack/interactions")
    assert local is not None
    try:
        written = json.loads(local.file.read_text())
        assert local.file.stat().st_mode & 0o777 == 0o600
        assert written["url"] == local.standin.url and written["slack_user"] == DEMO_SLACK_USER
        assert written["signing_secret"] == local.signing_secret and len(written["signing_secret"]) == 32
        env = local.environment(DashboardProcessSettings().url)
        assert env["TOWER_SLACK_API_URL"] == local.standin.api_url
        assert env["TOWER_SLACK_SIGNING_SECRET"] == local.signing_secret
        assert json.loads(env["TOWER_ALERTING_SLACK_USERS"]) == {DEMO_SLACK_USER: DEMO_OPERATOR}
        # the stand-in wants the bot token it was given
        assert httpx.post(
            f"{local.standin.api_url}auth.test", headers={"Authorization": "Bearer xoxb-other"}
        ).json() == {
            "ok": False,
            "error": "invalid_auth",
        }
        mine = httpx.post(f"{local.standin.api_url}auth.test", headers={"Authorization": f"Bearer {local.bot_token}"})
        assert mine.json()["ok"] is True
    finally:
        local.stop()

    monkeypatch.setenv("TOWER_SLACK_BOT_TOKEN", "xoxb-real")
    assert start_local_slack(settings, "http://127.0.0.1:1/slack/interactions") is None


def test_the_dashboard_remembers_visits_in_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "data")
    monkeypatch.delenv("TOWER_DASHBOARD_STATE_DIR", raising=False)
    child = dashboard_child(settings, DashboardProcessSettings(), "http://127.0.0.1:1", None)
    assert child.env["TOWER_DASHBOARD_STATE_DIR"] == str(tmp_path / "data" / "dashboard")  # not ./var of the shell
    monkeypatch.setenv("TOWER_DASHBOARD_STATE_DIR", str(tmp_path / "elsewhere"))
    child = dashboard_child(settings, DashboardProcessSettings(), "http://127.0.0.1:1", None)
    assert child.env["TOWER_DASHBOARD_STATE_DIR"] == str(tmp_path / "elsewhere")
