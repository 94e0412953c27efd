"""`tower reconcile [RULE]`: run reconciliation now through the running tower's API, with a progress bar."""

from __future__ import annotations

import time
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from tower.client import client, resolve_admin_token, tower_url


class ReconcileFailed(click.ClickException):
    """The tower could not be reached or refused the request."""

    exit_code = 2


class Bar:
    """One progress task per rule, advanced by the tower's progress lines."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def update(self, event: dict[str, Any]) -> None:
        """Show a progress line: the rule's phase, its step among the rule's steps."""
        rule, steps, step = str(event.get("rule", "")), int(event.get("steps") or 1), int(event.get("step") or 1)
        phase, message = str(event.get("phase", "")), str(event.get("message", ""))
        if rule not in self.tasks:
            self.tasks[rule] = self.progress.add_task(rule, total=steps)
        finished = phase in ("done", "error")
        label = f"{rule}: {phase}" + (f" ({message})" if message else "")
        self.progress.update(
            self.tasks[rule], total=steps, completed=steps if finished else step - 1, description=label
        )


class Lines:
    """Progress as plain lines, one per phase, with the seconds since the start: what a log or a cron mail keeps
    when stderr is not a terminal (a live bar there leaves only its last frame, cut to 80 columns)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.begun = time.monotonic()

    def update(self, event: dict[str, Any]) -> None:
        """Print the progress line: the rule, its phase and step, and the tower's message."""
        rule, steps, step = str(event.get("rule", "")), int(event.get("steps") or 1), int(event.get("step") or 1)
        phase, message = str(event.get("phase", "")), str(event.get("message", ""))
        label = f"{rule}: {phase}" + (f" ({message})" if message else "")
        self.console.print(Text(f"[{time.monotonic() - self.begun:6.1f} s] {label}, step {step} of {steps}"))


def stream_runs(url: str | None, token: str | None, rule: str | None, on_progress: Any) -> list[dict[str, Any]]:
    """POST /api/reconcile/run?stream=true, hand each progress line to `on_progress`, answer the runs."""
    params: dict[str, str] = {"stream": "true"}
    if rule:
        params["rule"] = rule
    with client(url, resolve_admin_token(token), timeout=3600) as http:
        try:
            with http.stream("POST", "/api/reconcile/run", params=params) as response:
                if response.status_code != 200:
                    response.read()
                    raise ReconcileFailed(f"the tower answered {response.status_code}: {_detail(response)}")
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    message = orjson.loads(line)
                    kind = message.get("event")
                    if kind == "progress":
                        on_progress(message)
                    elif kind == "error":
                        raise ReconcileFailed(f"the run failed: {message.get('detail')}")
                    elif kind == "result":
                        runs: list[dict[str, Any]] = message.get("runs", [])
                        return runs
        except httpx.HTTPError as exc:
            raise ReconcileFailed(f"cannot reach the tower at {tower_url(url)}: {exc}") from exc
    raise ReconcileFailed("the tower closed the stream before the result")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") if isinstance(body, dict) else body)[:300]


def render(runs: list[dict[str, Any]]) -> list[str]:
    """One line per run: rule, status, pairs/documents compared, differing, opened, resolved, reopened, seconds."""
    lines: list[str] = []
    width = max((len(str(run.get("rule"))) for run in runs), default=4)
    for run in runs:
        lines.append(
            f"{run.get('rule')!s:<{width}}  {run.get('status')!s:<5}  compared {run.get('rows_compared', 0):>9,}"
            f"  differing {run.get('findings', 0):>7,}  opened {run.get('opened', 0):>5}"
            f"  resolved {run.get('resolved', 0):>5}  reopened {run.get('reopened', 0):>4}"
            f"  {float(run.get('duration_ms', 0)) / 1000:.2f} s"
        )
    return lines


@click.command("reconcile")
@click.argument("rule", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (progress still goes to stderr).")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token of an operator or admin (TOWER_TOKEN; default: the generated admin token).")
def reconcile(rule: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Run reconciliation RULE now (every reconciliation rule when omitted) and show what it found.

    The tower compares the systems of record, opens exceptions for differences, resolves those
    that agree again and reopens wrongly resolved ones; each run is recorded (GET
    /api/reconcile/runs). Exit code 0 when every run succeeded, 1 when one failed (its error is
    shown), 2 when the tower cannot be reached or refuses the request (e.g. an unknown rule).
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if err.is_terminal:
        # markup off: an error may quote a value in brackets ('[n/a]'), which markup would drop or choke on
        columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=False) as progress:
            runs = stream_runs(url, token, rule, Bar(progress).update)
    else:
        runs = stream_runs(url, token, rule, Lines(err).update)
    if as_json:
        click.echo(orjson.dumps(runs, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in render(runs):
            click.echo(line)
    failed = [r for r in runs if r.get("status") == "error"]
    for run in failed:
        err.print(Text.assemble(("error", "red"), f" in {run.get('rule')}: {run.get('error')}"))
    if failed:
        click.get_current_context().exit(1)
