"""Rule and routing files: YAML read with line numbers, validated into typed models.

Every problem of every file is collected and raised once, as a `RuleFileError` with one line
per problem: `path/to/file.yaml:LINE: field.path: message`. YAML is read as `yaml.safe_load`
does, except that a scalar like `14:00` stays text (YAML 1.1 would read the base-60 number 840,
and a cutoff time would silently become 00:14), and so does a whole number not written plainly
(`0042`, which YAML 1.1 reads as the octal 34: an id must keep what was written).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from kernel.model.events import EVENT_TYPES
from sla_rules.model import (
    DeliveriesRule,
    ErrorRateRule,
    IdReuseRule,
    JobFailuresRule,
    ReconciliationRule,
    RefusalsRule,
    Rule,
    SilenceRule,
    SlaRule,
)
from sla_rules.routing import (  # Routing re-exported: rules and routing load from one module
    DATA_FIELDS,
    AlertRoute,
    RouteMatch,
    Routing,
)

__all__ = [
    "LoadedRule",
    "ParamsModels",
    "Problem",
    "RuleFileError",
    "RuleSet",
    "Routing",
    "default_routing_file",
    "default_rules_dir",
    "load_routing",
    "load_rule_set",
    "load_rules",
    "parse_rule",
    "read_rule_file",
]

RULE_SUFFIXES = (".yaml", ".yml")
RULE_TYPES = ("sla", "reconciliation", "technical")
TechnicalModel = (
    type[ErrorRateRule]
    | type[SilenceRule]
    | type[RefusalsRule]
    | type[DeliveriesRule]
    | type[IdReuseRule]
    | type[JobFailuresRule]
)
TECHNICAL_CHECKS: dict[str, TechnicalModel] = {
    "error-rate": ErrorRateRule,
    "silence": SilenceRule,
    "refusals": RefusalsRule,
    "deliveries": DeliveriesRule,
    "id-reuse": IdReuseRule,
    "job-failures": JobFailuresRule,
}

Loc = tuple[str | int, ...]
RuleModel = type[SlaRule] | type[ReconciliationRule] | TechnicalModel


def default_rules_dir() -> Path:
    """The rules shipped with the tower (sla_rules/rules), wherever the package is installed."""
    return Path(__file__).resolve().parent / "rules"


def default_routing_file() -> Path:
    """The routing file shipped with the tower (sla_rules/routing.yaml)."""
    return Path(__file__).resolve().parent / "routing.yaml"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: where (file, line, field) and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RuleFileError(ValueError):
    """Rule or routing files that do not load; the message has one `file:line: field: message` per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def lines(self) -> list[str]:
        """The problems, one line each."""
        return [str(p) for p in self.problems]


@dataclass(frozen=True)
class LoadedRule:
    """A validated rule with the mapping it was read from and where it is."""

    rule: Rule
    data: dict[str, Any]
    file: str
    line: int
    node: yaml.Node | None = None

    def line_of(self, *loc: str | int) -> int:
        """The line of a field of this rule (or of the rule itself when the field is absent)."""
        found = _line_of(self.node, loc)
        return self.line if found is None else found


@dataclass(frozen=True)
class ParamsModels:
    """How `params` of reconciliation rules are checked: a pydantic model per `compare` value (the
    reconcilers' own, handed in by the composition root, since sla_rules does not import them) and the
    validation context (e.g. the configured pull databases). Problems read `file:line: params.x: message`."""

    models: Mapping[str, type[BaseModel]]
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RuleSet:
    """The rules and the routing the tower runs with."""

    rules: list[Rule]
    routing: Routing

    @property
    def enabled(self) -> list[Rule]:
        """The rules with `enabled: true` (the default)."""
        return [rule for rule in self.rules if rule.enabled]

    def misspelt_types(self) -> list[str]:
        """Warnings for the event types of SLA rules that are not types the tower knows but are close to one (an
        edit away, about): such a rule would quietly find nothing. A custom type far from every known one is
        taken as meant (`order.picked`)."""
        warnings = []
        for rule in self.rules:
            if not isinstance(rule, SlaRule):
                continue
            for side, match in (("start", rule.start), ("end", rule.end)):
                for type_ in match.types:
                    if type_ in EVENT_TYPES:
                        continue
                    close = difflib.get_close_matches(type_, EVENT_TYPES, n=1, cutoff=0.85)
                    if close:
                        warnings.append(
                            f"rule {rule.id}: {side} type {type_!r} is not a type the tower knows; "
                            f"did you mean {close[0]!r}? (the rule finds no event of it)"
                        )
        return warnings


def load_rules(folder: Path) -> list[Rule]:
    """Every rule of the *.yaml / *.yml files in `folder` (sorted by name), or RuleFileError listing every problem."""
    problems: list[Problem] = []
    loaded = _load_folder(folder, problems)
    if problems:
        raise RuleFileError(problems)
    return [entry.rule for entry in loaded]


def read_rule_file(path: Path) -> list[LoadedRule]:
    """The rules of one file with their parsed mappings, or RuleFileError."""
    problems: list[Problem] = []
    loaded = _rules_in_file(path, problems)
    if problems:
        raise RuleFileError(problems)
    return loaded


def parse_rule(data: Any, origin: str = "rule") -> Rule:
    """Validate one rule given as a mapping (e.g. a request body); RuleFileError names `origin` and the fields."""
    problems: list[Problem] = []
    rule = _validate_rule(data, None, origin, problems)
    if rule is None:
        raise RuleFileError(problems or [Problem(origin, None, "", "not a valid rule")])
    return rule


def load_routing(path: Path) -> Routing:
    """The routing file at `path`, or RuleFileError. An empty file routes every rule to its own owner."""
    problems: list[Problem] = []
    routing, _ = _read_routing(path, problems)
    if problems or routing is None:
        raise RuleFileError(problems)
    return routing


def load_rule_set(
    rules_dir: Path | None = None, routing_file: Path | None = None, params: ParamsModels | None = None
) -> RuleSet:
    """Rules and routing (the shipped ones where None), checked together, or one RuleFileError with every problem.

    With `params`, each reconciliation rule's `compare` must name one of its models and `params` must
    validate against it.

    Besides each file on its own: a route naming an unknown rule, and (when the routing file
    declares `owners:`) a rule owner that is not declared.
    """
    problems: list[Problem] = []
    loaded = _load_folder(rules_dir or default_rules_dir(), problems, params)
    # With a broken rule file, a route naming its rule is not "unknown": check ids only when all rules load.
    rules_ok = not problems
    if rules_ok and params is not None:
        problems.extend(_finding_clashes(loaded, params))
    routing_path = routing_file or default_routing_file()
    routing, node = _read_routing(routing_path, problems)
    if routing is not None:
        shown = _shown(routing_path)
        if rules_ok:
            for loc, message in _routes_against_rules(routing, [entry.rule for entry in loaded], params):
                problems.append(Problem(shown, _line_of(node, loc), _field(loc, node), message))
        if routing.owners:
            for entry in loaded:
                owner = entry.rule.owner
                if entry.rule.kind != "technical" and owner not in routing.owners:
                    problems.append(
                        Problem(
                            entry.file,
                            entry.line_of("owner"),
                            "owner",
                            f"owner {owner!r} is not declared under owners: in {shown}",
                        )
                    )
    if problems or routing is None:
        raise RuleFileError(problems)
    return RuleSet([entry.rule for entry in loaded], routing)


def _routes_against_rules(
    routing: Routing, rules: list[Rule], params: ParamsModels | None
) -> Iterator[tuple[Loc, str]]:
    """What the routing file says of rules that cannot be: a match naming a rule that does not exist (owner routes,
    alert routes, windows, root causes), and a match on a data field that no case of the SLA rules it names
    carries (such a route never applies)."""
    by_id = {rule.id: rule for rule in rules}
    findings = _finding_ids(rules, params)  # reconcilers open exceptions under these ids too (alerts match them)
    lenient = findings is None  # reconciliation params not checked: their finding ids are unknown

    def check(loc: Loc, match: RouteMatch, alerts: bool) -> Iterator[tuple[Loc, str]]:
        named = match.rule or []
        for rule_id in named:
            if rule_id not in by_id and not (alerts and (lenient or rule_id in (findings or ()))):
                yield (*loc, "rule"), f"unknown rule {rule_id!r}"
        sla = [rule for r in named if isinstance(rule := by_id.get(r), SlaRule)]
        if not sla or len(sla) < len(named):  # no rule named, or one whose exceptions may carry other fields
            return
        carried = {field for rule in sla for field in rule.route_fields()}
        for field in DATA_FIELDS:
            if getattr(match, field) is not None and field not in carried:
                yield (
                    (*loc, field),
                    f"the cases of {', '.join(named)} carry no {field} (only {', '.join(sorted(carried))}):"
                    " this route never applies",
                )

    for index, route in enumerate(routing.routes):
        yield from check(("routes", index, "match"), route.match, alerts=False)

    def walk(loc: Loc, routes: list[AlertRoute]) -> Iterator[tuple[Loc, str]]:
        for index, route in enumerate(routes):
            yield from check((*loc, index, "match"), route.match, alerts=True)
            yield from walk((*loc, index, "routes"), route.routes)

    yield from walk(("alerts", "routes"), routing.alerts.routes)
    for index, window in enumerate(routing.alerts.windows):
        yield from check(("alerts", "windows", index, "match"), window.match, alerts=True)
    for index, cause in enumerate(routing.alerts.root_causes):
        yield from check(("alerts", "root_causes", index, "holds"), cause.holds, alerts=True)


def _finding_ids(rules: list[Rule], params: ParamsModels | None) -> set[str] | None:
    """The other rule ids reconciliation rules open exceptions under (a params field `rule` or `*_rule`, defaults
    included, e.g. inventory-stale); None when a reconciliation rule's params are not checked here."""
    found: set[str] = set()
    for rule in rules:
        if not isinstance(rule, ReconciliationRule):
            continue
        model = None if params is None else params.models.get(rule.compare)
        if model is None:
            return None
        checked = model.model_validate(rule.params, context=dict(params.context or {}) if params else None)
        found.update(rule_id for _, rule_id in _named_rule_paths(checked.model_dump()))
    return found


def _finding_clashes(loaded: list[LoadedRule], params: ParamsModels) -> list[Problem]:
    """A reconciliation rule's finding id (params.stale_rule, params.oversell.rule, defaults included) that is another
    rule's id, its own or another finding's: their exceptions would share a rule id, and one rule would resolve the
    other's as recovered."""
    taken = {entry.rule.id: f"rule {entry.rule.id} ({entry.file}:{entry.line_of('id')})" for entry in loaded}
    problems: list[Problem] = []
    for entry in loaded:
        rule = entry.rule
        model = params.models.get(rule.compare) if isinstance(rule, ReconciliationRule) else None
        if model is None or not isinstance(rule, ReconciliationRule):
            continue
        checked = model.model_validate(rule.params, context=dict(params.context or {}))
        for path, finding in _named_rule_paths(checked.model_dump()):
            where = ("params", *path)
            if finding in taken:
                problems.append(
                    Problem(
                        entry.file,
                        entry.line_of(*where),
                        _field(where),
                        f"{rule.id} opens its findings under {finding!r}, the id of {taken[finding]}: their exceptions"
                        " would mix (one would resolve the other's); give the findings an id of their own",
                    )
                )
            else:
                taken[finding] = f"the findings of rule {rule.id} ({_field(where)})"
    return problems


def _named_rule_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(where, rule id) of each `rule` or `*_rule` text in a reconciler's checked params."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            if isinstance(item, str) and (name == "rule" or str(name).endswith("_rule")):
                yield (*path, str(name)), item
            else:
                yield from _named_rule_paths(item, (*path, str(name)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _named_rule_paths(item, (*path, index))


# --- rules ------------------------------------------------------------------------------------


def _load_folder(folder: Path, problems: list[Problem], params: ParamsModels | None = None) -> list[LoadedRule]:
    shown = _shown(folder)
    if not folder.is_dir():
        problems.append(Problem(shown, None, "", "not a folder of rule files"))
        return []
    files = sorted(
        path
        for path in folder.iterdir()
        # any case: a Ship-Cutoff.YAML left out would silently take its rule out of the folder's set
        if path.suffix.lower() in RULE_SUFFIXES and path.is_file() and not path.name.startswith(".")
    )
    if not files:
        problems.append(Problem(shown, None, "", "no rule files (*.yaml, *.yml)"))
        return []
    first: dict[str, str] = {}
    return [entry for path in files for entry in _validated(_items_in_file(path, problems), first, problems, params)]


def _validated(
    items: list[_Item], first: dict[str, str], problems: list[Problem], params: ParamsModels | None = None
) -> list[LoadedRule]:
    """The valid rules of `items`; an id already in `first` (id -> where it was first seen) is a problem."""
    loaded: list[LoadedRule] = []
    for item in items:
        # Duplicates are found from the raw ids, so that an invalid rule still claims its id.
        rule_id = item.data.get("id") if isinstance(item.data, Mapping) else None
        duplicate = False
        if isinstance(rule_id, str):
            line = _line_of(item.node, ("id",))
            duplicate = rule_id in first
            if duplicate:
                problems.append(
                    Problem(item.file, line, "id", f"duplicate rule id {rule_id!r}, also in {first[rule_id]}")
                )
            else:
                first[rule_id] = f"{item.file}:{line}"
        rule = _validate_rule(item.data, item.node, item.file, problems, params)
        if rule is not None and not duplicate:
            loaded.append(LoadedRule(rule, item.data, item.file, item.node.start_mark.line + 1, item.node))
    return loaded


@dataclass(frozen=True)
class _Item:
    """One entry of a rule file, not validated yet."""

    data: Any
    file: str
    node: yaml.Node


def _rules_in_file(path: Path, problems: list[Problem]) -> list[LoadedRule]:
    # checked as in a folder: a list file giving one id twice is a problem here too
    return _validated(_items_in_file(path, problems), {}, problems)


def _items_in_file(path: Path, problems: list[Problem]) -> list[_Item]:
    """The entries of a rule file: the mapping it holds, or each of the list it holds."""
    shown = _shown(path)
    read = _read_yaml(path, shown, problems)
    if read is None:
        return []
    node, data = read
    if node is None:
        problems.append(Problem(shown, 1, "", "empty file; expected a rule (a mapping) or a list of rules"))
        return []
    if not isinstance(data, list):
        return [_Item(data, shown, node)]
    assert isinstance(node, yaml.SequenceNode)
    if not data:
        problems.append(Problem(shown, node.start_mark.line + 1, "", "empty list; expected rules"))
    return [_Item(item, shown, item_node) for item_node, item in zip(node.value, data, strict=True)]


def _validate_rule(
    data: Any, node: yaml.Node | None, shown: str, problems: list[Problem], params: ParamsModels | None = None
) -> Rule | None:
    def problem(loc: Loc, message: str) -> None:
        problems.append(Problem(shown, _line_of(node, loc), _field(loc, node), message))

    if not isinstance(data, Mapping):
        problem((), f"a rule must be a mapping of fields, not {_yaml_kind(data)}")
        return None
    model = _rule_model(data, problem)
    if model is None:
        return None
    try:
        rule: Rule = model.model_validate(data)
    except ValidationError as exc:
        # top to bottom, as the file reads (pydantic lists them in the order of the model's fields)
        for error in sorted(exc.errors(include_url=False), key=lambda e: _line_of(node, e["loc"]) or 0):
            problem(error["loc"], _message(model, error))
        return None
    before = len(problems)
    if rule.type == "technical" and rule.kind != "technical":
        problem(("kind",), "technical rules have kind technical")
    if isinstance(rule, SlaRule):
        for loc, message in sla_rule_problems(rule):
            problem(loc, message)
    if isinstance(rule, ReconciliationRule) and params is not None:
        _check_params(rule, params, problem)
    return rule if len(problems) == before else None


def sla_rule_problems(rule: SlaRule) -> list[tuple[Loc, str]]:
    """What makes a valid SLA rule unusable, which its model cannot see field by field: (field path, message)."""
    found: list[tuple[Loc, str]] = []
    after = rule.deadline.after
    if rule.warning is not None and after is not None and rule.warning >= after:
        found.append((("warning",), "the warning window must be shorter than the deadline (deadline.after)"))
    both = rule.ends_at_start()
    if both:
        found.append(
            (
                ("end", "types"),
                f"{', '.join(both)} also starts a case and nothing tells the sides apart: a case would end at its own"
                " start event (met at once); use other end types, or `where`/`sources` filters that exclude each"
                " other",
            )
        )
    return found


def _check_params(rule: ReconciliationRule, params: ParamsModels, problem: Callable[[Loc, str], None]) -> None:
    """A reconciliation rule's `compare` and `params` against the reconcilers' parameter models."""
    model = params.models.get(rule.compare)
    if model is None:
        problem(("compare",), f"unknown reconciler {rule.compare!r}; one of {', '.join(params.models)}")
        return
    try:
        model.model_validate(rule.params, context=dict(params.context or {}))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problem(("params", *error["loc"]), _message(model, error))


def _rule_model(data: Mapping[str, Any], problem: Callable[[Loc, str], None]) -> RuleModel | None:
    """The model a rule mapping is validated with, chosen by `type` (and `check` for technical rules)."""
    kind = data.get("type")
    if kind is None:
        problem(("type",), f"required: one of {', '.join(RULE_TYPES)}")
        return None
    if kind == "sla":
        return SlaRule
    if kind == "reconciliation":
        return ReconciliationRule
    if kind != "technical":
        problem(("type",), f"must be one of {', '.join(RULE_TYPES)} (got {kind!r})")
        return None
    check = data.get("check")
    if check is None:
        problem(("check",), f"required for technical rules: one of {', '.join(TECHNICAL_CHECKS)}")
        return None
    model = TECHNICAL_CHECKS.get(check) if isinstance(check, str) else None
    if model is None:
        problem(("check",), f"must be one of {', '.join(TECHNICAL_CHECKS)} (got {check!r})")
    return model


# --- routing ----------------------------------------------------------------------------------


def _read_routing(path: Path, problems: list[Problem]) -> tuple[Routing | None, yaml.Node | None]:
    shown = _shown(path)
    read = _read_yaml(path, shown, problems)
    if read is None:
        return None, None
    node, data = read
    if node is None:
        return Routing(), None
    if not isinstance(data, Mapping):
        problems.append(Problem(shown, node.start_mark.line + 1, "", "expected a mapping with routes: (and owners:)"))
        return None, node
    try:
        routing = Routing.model_validate(data)
    except ValidationError as exc:
        for error in sorted(exc.errors(include_url=False), key=lambda e: _line_of(node, e["loc"]) or 0):
            problems.append(
                Problem(shown, _line_of(node, error["loc"]), _field(error["loc"], node), _message(Routing, error))
            )
        return None, node
    found = routing.problems()
    for loc, message in found:
        problems.append(Problem(shown, _line_of(node, loc), _field(loc, node), message))
    return (None if found else routing), node


# --- YAML with line numbers -------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_NUMBERS = (_INT, "tag:yaml.org,2002:float")
_BOOL = "tag:yaml.org,2002:bool"
# A whole number written as it prints: read as a number; any other form YAML 1.1 reads as one stays text.
_PLAIN_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def _resolve(self: Any, kind: Any, value: Any, implicit: Any) -> Any:
    tag = yaml.resolver.Resolver.resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call]
    written = kind is yaml.ScalarNode and implicit[0]
    if written and tag in _NUMBERS and (":" in value or (tag == _INT and not _PLAIN_INT.match(value))):
        return _STR
    if written and tag == _BOOL and value.lower() not in ("true", "false"):
        return _STR  # yes/no/on/off: a warehouse ON or NO stays its code; a yes/no field still reads them
    return tag


def _timestamp(self: Any, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(self, node)
    except (ValueError, OverflowError):
        return str(node.value)


class _Loader(yaml.SafeLoader):
    """safe_load, except that base-60 numbers (`14:00`, `1:30:00`) stay text, and so does a whole number not written
    plainly (`0042`, `1_000`, `0x1F`, `+5`: YAML 1.1 reads `0042` as the octal 34; as text, an id keeps what was
    written and a number field reads it in decimal), YAML 1.1's other booleans (`yes`, `no`, `on`, `off`: the
    warehouse ON, Norway's NO; a boolean field reads them as pydantic does) and a date that is not one
    (`2026-11-31`): safe_load raises a bare ValueError for it, with no line; as text, the field that wants a date
    reports it with its line."""

    resolve = _resolve
    construct_yaml_timestamp = _timestamp


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
# The loaders to try in turn. libyaml's parser, when PyYAML has it (its wheels do), reads the same nodes with the
# same marks about eight times faster, which every start of the tower pays; the pure Python one reads a file
# libyaml refused again, for its messages, which name what it found ("but got '<stream end>'").
_LOADERS: tuple[type[Any], ...] = (_Loader,)
if yaml.__with_libyaml__:

    class _FastLoader(yaml.CSafeLoader):
        """_Loader on libyaml's parser."""

        resolve = _resolve
        construct_yaml_timestamp = _timestamp

    _FastLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
    _LOADERS = (_FastLoader, _Loader)


def _read_yaml(path: Path, shown: str, problems: list[Problem]) -> tuple[yaml.Node | None, Any] | None:
    """(root node, data) of a one-document YAML file; None (and a problem) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(shown, None, "", f"cannot read: {exc}"))
        return None
    for loader_class in _LOADERS[:-1]:
        try:
            return _parse(loader_class, text, shown, problems)
        except yaml.YAMLError:
            continue
    try:
        return _parse(_LOADERS[-1], text, shown, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        what = str(exc.problem or exc.context or "cannot parse")
        if exc.context and exc.problem and exc.context_mark is not None:
            what += f" ({exc.context} from line {exc.context_mark.line + 1})"
        problems.append(Problem(shown, line, "", f"YAML syntax error: {what}"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(shown, None, "", f"YAML error: {exc}"))
        return None


def _parse(
    loader_class: type[Any], text: str, shown: str, problems: list[Problem]
) -> tuple[yaml.Node | None, Any] | None:
    """What _read_yaml answers, read with `loader_class`; its YAMLError raised."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        duplicates = list(_duplicate_keys(node, loader.construct_object))
        for key, first in duplicates:
            said = "duplicate key"
            if key.value != first.value:
                said += f": reads as the same key as {first.value!r} on line {first.start_mark.line + 1}"
            problems.append(Problem(shown, key.start_mark.line + 1, str(key.value), said))
        if duplicates:
            return None
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _duplicate_keys(
    node: yaml.Node, read: Callable[[yaml.Node], Any]
) -> Iterator[tuple[yaml.ScalarNode, yaml.ScalarNode]]:
    """Keys given twice in one mapping, each with the key it repeats (safe_load would silently keep the last);
    merge keys aside. Keys are compared as read (`read`), as the mapping built from them would: `true` and
    `True`, or `1` and `1.0`, are one key."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.ScalarNode] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                try:
                    identity = read(key)
                    hash(identity)
                except (yaml.YAMLError, ValueError, TypeError):
                    identity = key.value
                first = seen.setdefault(identity, key)
                if first is not key:
                    yield key, first
            yield from _duplicate_keys(value, read)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, read)


def _line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """1-based line of the value at `loc` below `node`; for an absent field, the line of its nearest parent."""
    if node is None:
        return None
    line = node.start_mark.line
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                    line, node = key.start_mark.line, value
                    break
            else:
                return line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line
        else:
            return line + 1
    if isinstance(node, yaml.ScalarNode):
        line = node.start_mark.line
    return line + 1


# --- messages ---------------------------------------------------------------------------------


def _field(loc: Sequence[str | int], node: yaml.Node | None = None) -> str:
    """`deadline.cutoff.timezone`, `start.types[0]`; pydantic's `[key]` marker dropped. A number is an index in a
    list, but a key in a mapping (`zone_by.zones.7` for a warehouse 7), which `node` (the YAML read) tells apart."""
    out = ""
    for step in loc:
        keyed = isinstance(node, yaml.MappingNode)
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(step)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if isinstance(step, int) and not keyed:
            out += f"[{step}]"
        elif step != "[key]":
            out += f".{step}" if out else str(step)
    return out


def _message(model: type[BaseModel], error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, error["loc"][:-1])
        return f"unknown field; expected one of {', '.join(allowed)}" if allowed else "unknown field"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    value = error.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_yaml_kind(value)}"
    if kind == "list_type":
        return f"expected a list, got {_yaml_kind(value)}"
    if isinstance(value, (str, int, float, bool)):
        return f"{error['msg']} (got {value!r})"
    return str(error["msg"])


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names of the model at `loc` below `model` (for 'unknown field' messages)."""
    annotation: Any = model
    for step in loc:
        if isinstance(step, int):
            continue
        found = next((m for m in _models_in(annotation) if step in m.model_fields), None)
        if found is None:
            return []
        annotation = found.model_fields[step].annotation
    current = next(_models_in(annotation), None)
    return [] if current is None else [info.alias or name for name, info in current.model_fields.items()]


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


def _shown(path: Path) -> str:
    """The path as the user knows it: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
