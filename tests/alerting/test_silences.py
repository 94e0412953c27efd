"""Silences: matchers with an expiry; a silenced exception is not posted (and why is recorded), and is posted
when the silence ends while it is still open. Created, listed and expired by API and CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import tests.support
from alerting.silences import InvalidSilence, SilenceStore, parse_duration
from kernel.api_auth import token_id
from kernel.clock import FixedClock, SystemClock
from kernel.exceptions import ExceptionStore
from kernel.routing import ExceptionMatch
from kernel.store import Store
from tests.alerting.policy_support import T0, TITLES, by_key, dispatcher, messages, open_exception, state_of
from tests.support import RunningTower, start_in_process
from tests.tower.test_roles import settings_with_every_role
from tower.cli import main


def match(**values: Any) -> ExceptionMatch:
    return ExceptionMatch.model_validate(values)


def test_silence_lifecycle_on_the_clock(store: Store) -> None:
    clock = FixedClock(T0)
    silences = SilenceStore(store, clock)
    later = silences.create(
        match(warehouse="DAL"),
        created_by="ann",
        comment="dock",
        starts_at=T0 + timedelta(hours=1),
        duration=parse_duration("2h"),
    )
    now = silences.create(
        match(rule=["ship-cutoff"], key="SO-9"), created_by="ann", comment="known", ends_at=T0 + timedelta(minutes=30)
    )
    assert (later.status(T0), now.status(T0)) == ("pending", "active")
    assert [s.id for s in silences.active()] == [now.id]
    assert [s.id for s in silences.search("pending")] == [later.id]
    clock.advance(timedelta(hours=1))
    assert [s.id for s in silences.active()] == [later.id]
    assert silences.get(now.id).status(clock.now()) == "expired"
    expired = silences.expire(later.id, actor="bob")
    assert (expired.expired_at, expired.expired_by, silences.active()) == (clock.now(), "bob", [])
    assert silences.expire(later.id, actor="carl").expired_by == "bob"  # expiring twice changes nothing


def test_the_list_shows_what_a_terminal_would_act_on_as_escapes(roles_tower: RunningTower, store: Store) -> None:
    """A comment stored before the API checked it (or by another writer) reached the terminal as it was: an escape
    sequence cleared the screen of whoever listed the silences, a bidi override reversed what followed."""
    SilenceStore(store, SystemClock()).create(
        ExceptionMatch(key=["SO-1"]), created_by="ann\u202e", comment="dock\n\x1b[2Jclosed", duration=timedelta(hours=1)
    )
    auth = ["--url", roles_tower.http_url, "--token", roles_tower.api_token("operator")]
    listed = run_cli("list", *auth).stdout
    assert "  by ann\\u202e: dock\n\\x1b[2Jclosed" in listed  # the comment's newline kept
    assert "\x1b" not in listed and "\u202e" not in listed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matchers": match(), "duration": timedelta(hours=1)}, "at least one matcher"),
        ({"duration": timedelta(hours=1), "ends_at": T0 + timedelta(hours=1)}, "either an end time or a duration"),
        ({"ends_at": T0 - timedelta(minutes=1), "starts_at": T0 - timedelta(hours=1)}, "already be over"),
        ({"ends_at": T0 + timedelta(hours=1), "starts_at": T0 + timedelta(hours=2)}, "ends before it starts"),
        ({"duration": timedelta(hours=1), "comment": "  "}, "needs a comment"),
    ],
)
def test_invalid_silences_are_refused(store: Store, kwargs: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"matchers": match(owner="warehouse"), "created_by": "ann", "comment": "why"}
    values.update(kwargs)
    matchers = values.pop("matchers")
    with pytest.raises(InvalidSilence, match=message):
        SilenceStore(store, FixedClock(T0)).create(matchers, **values)
    assert parse_duration("1w") == timedelta(days=7)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_a_silence_that_could_never_match_is_refused(store: Store) -> None:
    """An unknown rule, or a value that only another case of matches (`dal` for `DAL`): refused, saying why. A value
    no exception has yet is accepted (trouble can be silenced before it starts)."""
    clock = FixedClock(T0)
    open_exception(ExceptionStore(store, clock), "ship-cutoff", "SO-1", owner="warehouse", warehouse="DAL")
    silences = SilenceStore(store, clock, rules=TITLES)
    values: dict[str, Any] = {"created_by": "ann", "comment": "dock", "duration": timedelta(hours=1)}
    with pytest.raises(InvalidSilence, match=r"unknown rule 'ship-cutof': did you mean 'ship-cutoff'\? known: asn-"):
        silences.create(match(rule="ship-cutof"), **values)
    with pytest.raises(InvalidSilence, match=r"warehouse 'dal' matches no exception .*did you mean 'DAL'\?"):
        silences.create(match(warehouse=["ATL", "dal"]), **values)
    assert silences.create(match(rule="ship-cutoff", warehouse=["DAL", "PHX"]), **values).status(T0) == "active"


def test_a_silenced_exception_is_posted_when_the_silence_ends(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    silence = SilenceStore(store, clock).create(
        match(rule="ship-cutoff", warehouse=["DAL", "ATL"]),
        created_by="ann",
        comment="DAL dock closed",
        duration=timedelta(hours=2),
    )
    silenced = open_exception(exceptions, "ship-cutoff", "SO-1", owner="warehouse", severity="medium", warehouse="DAL")
    resolved_meanwhile = open_exception(
        exceptions, "ship-cutoff", "SO-2", owner="warehouse", severity="medium", warehouse="ATL"
    )
    other = open_exception(exceptions, "ship-cutoff", "SO-3", owner="warehouse", severity="medium", warehouse="RNO")
    alerts = dispatcher(store, clock)

    report = alerts.run()
    assert (report.posted, report.held_back) == (1, {"silenced": 2})
    assert [m.exception_id for m in messages(alerts.outbox)] == [other.id]
    state = state_of(store, silenced.id)
    assert (state.decision, state.reason, state.channels) == ("silenced", silence.id, ("#ops-warehouse",))

    clock.advance(timedelta(hours=1))
    exceptions.resolve(resolved_meanwhile.id, actor="ann")
    exceptions.add_note(silenced.id, "still closed", actor="ann")
    assert alerts.run().enqueued == 0

    clock.advance(timedelta(hours=1))  # the silence ends
    report = alerts.run()
    assert (report.released, report.posted) == (1, 1)
    found = by_key(alerts.outbox)
    assert f"exc:{silenced.id}:post" in found and f"exc:{resolved_meanwhile.id}:post" not in found
    released = next(m for m in found.values() if m.action == "reply")
    assert released.parent == f"exc:{silenced.id}:post"
    assert released.text == (
        f":hourglass: This alert was silenced (silence {silence.id}) since 16:00 UTC; the silence is over."
    )
    assert state_of(store, silenced.id).decision == "posted"
    assert alerts.run().enqueued == 0


def test_expiring_a_silence_releases_its_exceptions(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    silences = SilenceStore(store, clock)
    silence = silences.create(match(key="SO-1"), created_by="ann", comment="c", duration=timedelta(days=1))
    record = open_exception(exceptions)
    alerts = dispatcher(store, clock)
    assert alerts.run().held_back == {"silenced": 1}
    clock.advance(timedelta(minutes=1))
    silences.expire(silence.id, actor="ann")
    assert alerts.run().released == 1
    assert f"exc:{record.id}:post" in by_key(alerts.outbox)


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(
        main, ["silences", *args], env={"TOWER_TOKEN": None, "TOWER_URL": None}, catch_exceptions=False
    )


@pytest.fixture
def roles_tower(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningTower]:
    """An in-process tower with a token for each role."""
    monkeypatch.setattr(tests.support, "make_settings", settings_with_every_role)
    with start_in_process(tmp_path, store) as running:
        yield running


def test_silences_api_and_cli(roles_tower: RunningTower) -> None:
    tower = roles_tower
    with tower.api("operator") as http:
        created = http.post(
            "/api/silences",
            json={
                "matchers": {"source": "wms", "severity": ["high", "critical"]},
                "duration": "2h",
                "comment": "WMS upgrade",
            },
        )
        assert created.status_code == 200, created.text
        body = created.json()
        assert body["matchers"] == {"source": ["wms"], "severity": ["high", "critical"]}
        assert body["status"] == "active" and body["created_by"]  # the token's id by default
        refused = http.post("/api/silences", json={"matchers": {}, "duration": "2h", "comment": "x"})
        assert refused.status_code == 422 and "at least one matcher" in refused.text
        refused = http.post("/api/silences", json={"matchers": {"colour": "red"}, "duration": "2h", "comment": "x"})
        assert refused.status_code == 422 and "colour" in refused.text
        refused = http.post("/api/silences", json={"matchers": {"key": "a"}, "duration": "soon", "comment": "x"})
        assert refused.status_code == 422 and "not a duration" in refused.text
        assert http.delete("/api/silences/nope").status_code == 404

    auth = ["--url", tower.http_url, "--token", tower.api_token("operator")]
    added = run_cli(
        "add",
        "--match",
        "rule=ship-cutoff",
        "--match",
        "warehouse=DAL,ATL",
        "--for",
        "30m",
        "--comment",
        "dock",
        "--by",
        "ann",
        *auth,
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("silenced: ") and "rule=ship-cutoff warehouse=DAL,ATL" in added.stdout
    assert f"by ann (token {token_id(tower.api_token('operator'))}): dock" in added.stdout  # a name, and who sent it
    silence_id = added.stdout.split()[1]
    listed = run_cli("list", "--status", "active", *auth)
    assert listed.stdout.count("  active  ") == 2 and silence_id in listed.stdout
    expired = run_cli("expire", silence_id, *auth)
    assert expired.exit_code == 0 and f"expired: {silence_id}  expired" in expired.stdout
    assert f"expired: {silence_id}  expired  expired 20" in expired.stdout and "until" not in expired.stdout
    assert silence_id in run_cli("list", "--status", "expired", *auth).stdout
    typo = run_cli("add", "--match", "rule=ship-cutof", "--for", "1h", "--comment", "x", *auth)
    assert typo.exit_code != 0 and "unknown rule 'ship-cutof': did you mean 'ship-cutoff'?" in typo.output
    bad = run_cli("add", "--match", "colour=red", "--for", "1h", "--comment", "x", *auth)
    assert bad.exit_code == 2 and "cannot match on 'colour'" in bad.output
    viewer = run_cli("expire", body["id"], "--url", tower.http_url, "--token", tower.api_token("viewer"))
    assert viewer.exit_code == 2 and "403" in viewer.output


def refused_then_made(tower: RunningTower, field: str, refused: str, accepted: str) -> tuple[str, dict[str, Any]]:
    """POST /api/silences with `field` set to `refused` (a 422 at the field, no silence made), then to `accepted`:
    the 422's message and the silence made."""
    silence = {"matchers": {"key": "SO-1"}, "duration": "1h", "comment": "dock closed"}
    with tower.api("operator") as http:
        refusal = http.post("/api/silences", json={**silence, field: refused})
        listed = http.get("/api/silences").json()["items"]
        made = http.post("/api/silences", json={**silence, field: accepted})
    assert refusal.status_code == 422, refusal.text
    (problem,) = refusal.json()["detail"]
    assert problem["loc"] == ["body", field] and listed == []
    assert made.status_code == 200, made.text
    return str(problem["msg"]), dict(made.json())


@pytest.mark.parametrize(
    ("created_by", "character"),
    [
        ("ann\ndal", "control character U+000A"),  # a second line in `tower silences list`, a forged audit line
        ("ann\tdal", "control character U+0009"),
        ("ann\x00", "control character U+0000"),
        ("ann \x1b[31mdal", "control character U+001B"),  # a terminal escape
        ("ann\x7f", "control character U+007F"),
        ("ann\x9b31m", "control character U+009B"),  # C1: CSI
        ("ann\u2028dal", "line separator U+2028"),
        ("ann\u2029dal", "paragraph separator U+2029"),
        ("\u202eladnna", "bidirectional formatting character U+202E"),  # shows as "anndal"
        ("\u2067ann\u2069", "bidirectional formatting character U+2067"),
    ],
)
def test_a_silence_by_a_name_with_a_control_character_is_422_naming_it(
    roles_tower: RunningTower, created_by: str, character: str
) -> None:
    """`created_by` took any text, shown in `tower silences list`, the audit and Slack: it is one line, like an
    assignee, and the silence is not made."""
    message, made = refused_then_made(roles_tower, "created_by", created_by, " Zoë Müller (dal) \n")
    assert f"the {character}:" in message
    assert made["created_by"].startswith("Zoë Müller (dal) (token ")


@pytest.mark.parametrize(
    ("comment", "character"),
    [
        ("dock closed\x00", "control character U+0000"),
        ("dock \x1b[2Jclosed", "control character U+001B"),  # a terminal escape in `tower silences list`
        ("dock\x85closed", "control character U+0085"),  # C1: NEL
        ("dock \u202edesolc", "bidirectional formatting character U+202E"),
    ],
)
def test_a_silence_comment_with_a_control_character_is_422_naming_it(
    roles_tower: RunningTower, comment: str, character: str
) -> None:
    """A silence's comment is free text: newlines and tabs stay, other control and bidi characters are refused."""
    message, made = refused_then_made(roles_tower, "comment", comment, "dock closed\r\n\tuntil 14:00")
    assert f"the {character}:" in message
    assert made["comment"] == "dock closed\n\tuntil 14:00"
