"""Renders the project's Bicep offline, as Azure Resource Manager would for given parameter
values: which resources a deployment creates, with which properties, or why it is refused.

pycep-parser (in .venv-iac, beside checkov) turns each file into a syntax tree; this module
evaluates that tree for the subset of Bicep the template uses: parameters and their
decorators, variables, conditions, loops, modules, lambdas, string interpolation, `fail()`.
What only Azure knows (ids, module outputs, `tenant()`, ...) stays an `Opaque` value, so an
invariant that depends on one cannot pass by accident.

Two quirks of pycep-parser 0.7.1 shape the template and this evaluator:
- identifiers and string literals both come out as plain strings: a string naming a symbol in
  scope is taken as that symbol (the template never uses such a name as literal text where a
  test looks);
- every binary operator has the same precedence and the right operand takes the rest of the
  expression (`a && b ? x : y` comes out as `a && (b ? x : y)`), so the template parenthesises
  compound conditions, and `misparsed_expressions` finds any place that does not.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IAC_PYTHON = ROOT / ".venv-iac" / "bin" / "python"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)*$")
_BINARY = frozenset(
    {
        "and",
        "or",
        "equals",
        "not_equals",
        "greater_than",
        "greater_than_or_equals",
        "less_than",
        "less_than_or_equals",
        "coalesce",
    }
)


class DeploymentRefused(Exception):
    """Azure would refuse this deployment: a `fail()` was reached or a parameter breaks its rules."""


class UnknownValue(Exception):
    """A decision depends on a value only Azure knows at deployment time."""


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value Azure fills in at deployment time (an id, an output, a tenant)."""

    text: str

    def __str__(self) -> str:
        return f"<{self.text}>"


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A resource symbol used as a value (`scope: queue`, `parent: account`)."""

    file: str
    symbol: str
    type: str
    name: str


@dataclass(frozen=True, slots=True)
class RenderedResource:
    """One resource a deployment would create (or reference, when `existing`)."""

    file: str
    symbol: str
    type: str
    existing: bool
    body: dict[str, Any]

    @property
    def properties(self) -> dict[str, Any]:
        value = self.body.get("properties", {})
        assert isinstance(value, dict)
        return value


@dataclass(frozen=True, slots=True)
class _Lambda:
    variable: str
    expression: Any
    evaluator: _FileEvaluator
    local: Mapping[str, Any]

    def __call__(self, item: Any) -> Any:
        return self.evaluator.value(self.expression, {**self.local, self.variable: item})


def load_asts(files: list[Path], root: Path = INFRA) -> dict[str, dict[str, Any]]:
    """Every file's pycep syntax tree, keyed by its path under `root` (one pycep run)."""
    script = (
        "import json, sys; from pathlib import Path; from pycep import BicepParser\n"
        "print(json.dumps({f: BicepParser().parse(file_path=Path(f)) for f in sys.argv[1:]}, default=str))\n"
    )
    result = subprocess.run(
        [str(IAC_PYTHON), "-c", script, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pycep could not parse the template:\n{result.stderr[-3000:]}")
    trees: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return {Path(path).relative_to(root).as_posix(): tree for path, tree in trees.items()}


class Template:
    """The parsed files of one Bicep deployment, rendered for given parameter values."""

    def __init__(self, asts: Mapping[str, dict[str, Any]], entry: str = "main.bicep") -> None:
        self.asts = dict(asts)
        self.entry = entry

    def parameters(self, file: str | None = None) -> dict[str, dict[str, Any]]:
        params: dict[str, dict[str, Any]] = self.asts[file or self.entry].get("parameters", {})
        return params

    def render(self, params: Mapping[str, Any]) -> list[RenderedResource]:
        """Every resource the deployment would hold; raises DeploymentRefused if Azure would refuse."""
        rendered: list[RenderedResource] = []
        self._render_file(self.entry, params, rendered)
        return rendered

    def _render_file(self, file: str, given: Mapping[str, Any], out: list[RenderedResource]) -> None:
        evaluator = _FileEvaluator(self, file, given)
        for symbol, resource in evaluator.ast.get("resources", {}).items():
            for local, body in evaluator.instances(resource["config"]):
                config = evaluator.value(body, local)
                out.append(RenderedResource(file, symbol, resource["type"], resource["existing"], config))
        for module in evaluator.ast.get("modules", {}).values():
            child = (Path(file).parent / module["detail"]["path"]).as_posix()
            for local, body in evaluator.instances(module["config"]):
                child_params = evaluator.value(body.get("params", {}), local)
                self._render_file(child, child_params, out)


class _FileEvaluator:
    """Values of one file's expressions for one set of parameter values."""

    def __init__(self, template: Template, file: str, given: Mapping[str, Any]) -> None:
        self.template = template
        self.file = file
        self.ast = template.asts[file]
        self.variables: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.params = self._parameters(given)

    def _parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        declared: dict[str, dict[str, Any]] = self.ast.get("parameters", {})
        unknown = set(given) - set(declared)
        if unknown:
            raise DeploymentRefused(f"{self.file}: no parameter named {sorted(unknown)}")
        self.params = values = {}
        for name, spec in declared.items():
            if name in given:
                values[name] = given[name]
            elif spec.get("default") is not None:
                values[name] = self.value(spec["default"], {})
            else:
                raise DeploymentRefused(f"{self.file}: parameter {name} has no value")
            _check_decorators(self.file, name, spec, values[name])
        return values

    def instances(self, config: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(loop variables, body) for each copy a resource or module declaration makes."""
        if "loop_type" in config:
            detail = config["loop_type"]["detail"]
            items = self.value(detail["array_name"], {})
            if isinstance(items, Opaque):
                raise UnknownValue(f"{self.file}: a loop over {items}")
            for item in items:
                local = {detail["item_name"]: item}
                if config.get("condition") is None or _truth(self.value(config["condition"], local)):
                    yield local, config["config"]
            return
        if set(config) == {"condition", "config"}:
            if _truth(self.value(config["condition"], {})):
                yield {}, config["config"]
            return
        yield {}, config

    # --- names --------------------------------------------------------------------------

    def _resolve(self, name: str, local: Mapping[str, Any]) -> tuple[bool, Any]:
        if name in local:
            return True, local[name]
        if name in self.params:
            return True, self.params[name]
        variables: dict[str, Any] = self.ast.get("variables", {})
        if name in variables:
            if name not in self.variables:
                self.variables[name] = self.value(variables[name]["value"], {})
            return True, self.variables[name]
        resources: dict[str, Any] = self.ast.get("resources", {})
        if name in resources:
            return True, self._resource_ref(name)
        if name in self.ast.get("modules", {}):
            return True, Opaque(name)
        return False, None

    def _resource_ref(self, symbol: str) -> ResourceRef:
        resource = self.ast["resources"][symbol]
        config = resource["config"]
        body = config.get("config", config) if ("loop_type" in config or "condition" in config) else config
        # An existing resource found by another key (Graph's `appId`) has no name to evaluate.
        name = symbol if body.get("name") is None else _text(self.value(body["name"], {}))
        if body.get("parent"):
            parent = self.value(body["parent"], {})
            assert isinstance(parent, ResourceRef)
            name = f"{parent.name}/{name}"
        return ResourceRef(self.file, symbol, resource["type"], name)

    # --- expressions --------------------------------------------------------------------

    def value(self, node: Any, local: Mapping[str, Any]) -> Any:
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, str):
            return self._string(node, local)
        if isinstance(node, list):
            return [self.value(item, local) for item in node]
        if isinstance(node, dict):
            if set(node) == {"operator"}:
                return self._operator(node["operator"], local)
            if set(node) == {"function"}:
                return self._function(node["function"], local)
            if node.get("type") == "lambda_expression":
                detail = node["detail"]
                return _Lambda(detail["var_1"], detail["expression"], self, dict(local))
            return {key: self.value(item, local) for key, item in node.items()}
        raise TypeError(f"{self.file}: cannot evaluate {node!r}")

    def _string(self, text: str, local: Mapping[str, Any]) -> Any:
        if _IDENTIFIER.match(text):
            found, value = self._resolve(text, local)
            if found:
                return value
        if "${" not in text:
            return text
        return _INTERPOLATION.sub(lambda m: _text(self._interpolated(m.group(1).strip(), local)), text)

    def _interpolated(self, expression: str, local: Mapping[str, Any]) -> Any:
        if not _DOTTED.match(expression):
            return Opaque(expression)
        first, *rest = expression.split(".")
        found, value = self._resolve(first, local)
        if not found:
            raise NameError(f"{self.file}: unknown name {first!r} in '${{{expression}}}'")
        for name in rest:
            value = _member(value, name)
        return value

    def _operator(self, operator: dict[str, Any], local: Mapping[str, Any]) -> Any:
        kind = operator["type"]
        operands = operator["operands"]
        if kind == "conditional":
            chosen = "true_value" if _truth(self.value(operands["condition"], local)) else "false_value"
            return self.value(operands[chosen], local)
        if kind == "not":
            return not _truth(self.value(operands["bool_value"], local))
        if kind == "property_accessor":
            value = self.value(operands["operand_1"], local)
            for name in _member_path(operands["operand_2"]):
                value = _member(value, name)
            return value
        if kind == "index_accessor":
            container = self.value(operands["operand_1"], local)
            index = self.value(operands["operand_2"], local)
            return Opaque(f"{container}[{index}]") if isinstance(container, Opaque) else container[index]
        left = self.value(operands["operand_1"], local)
        if kind == "and":
            return _truth(left) and _truth(self.value(operands["operand_2"], local))
        if kind == "or":
            return _truth(left) or _truth(self.value(operands["operand_2"], local))
        if kind == "coalesce":
            return left if left is not None else self.value(operands["operand_2"], local)
        right = self.value(operands["operand_2"], local)
        if isinstance(left, Opaque) or isinstance(right, Opaque):
            raise UnknownValue(f"{self.file}: {kind} of {left} and {right}")
        comparisons: dict[str, Callable[[Any, Any], bool]] = {
            "equals": lambda a, b: _folded(a) == _folded(b),
            "not_equals": lambda a, b: _folded(a) != _folded(b),
            "greater_than": lambda a, b: bool(a > b),
            "greater_than_or_equals": lambda a, b: bool(a >= b),
            "less_than": lambda a, b: bool(a < b),
            "less_than_or_equals": lambda a, b: bool(a <= b),
        }
        if kind not in comparisons:
            raise NotImplementedError(f"{self.file}: operator {kind}")
        return comparisons[kind](left, right)

    def _function(self, function: dict[str, Any], local: Mapping[str, Any]) -> Any:
        kind = function["type"]
        raw = [value for value in (function.get("parameters") or {}).values() if value is not None]
        if kind == "fail":
            raise DeploymentRefused(_text(self.value(raw[0], local)))
        if kind in {"subscription", "tenant", "resource_group", "environment", "deployment", "deployer"}:
            return Opaque(f"{kind}()")
        args = [self.value(arg, local) for arg in raw]
        if kind in _NEEDS_KNOWN_ARGUMENTS and any(isinstance(arg, Opaque) for arg in args):
            return Opaque(f"{kind}(...)")  # a condition on it raises UnknownValue
        if kind not in _FUNCTIONS:
            raise NotImplementedError(f"{self.file}: function {kind}")
        return _FUNCTIONS[kind](*args)


def _check_decorators(file: str, name: str, spec: dict[str, Any], value: Any) -> None:
    """What ARM checks before it deploys: the type, @allowed, @minValue/@maxValue, lengths."""
    expected = {"string": str, "int": int, "bool": bool, "array": list, "object": dict}.get(spec["type"])
    wrong_type = expected is not None and not isinstance(value, expected)
    if not isinstance(value, Opaque) and (wrong_type or (expected is int and isinstance(value, bool))):
        raise DeploymentRefused(f"{file}: parameter {name} must be {spec['type']}, not {value!r}")
    for decorator in spec.get("decorators", []):
        kind, argument = decorator["type"], decorator.get("argument")
        if isinstance(value, Opaque):
            continue
        if kind == "allowed" and value not in argument:
            raise DeploymentRefused(f"{file}: {name}={value!r} is not one of the allowed values")
        if kind == "min_value" and value < argument:
            raise DeploymentRefused(f"{file}: {name}={value!r} is under its minimum {argument}")
        if kind == "max_value" and value > argument:
            raise DeploymentRefused(f"{file}: {name}={value!r} is over its maximum {argument}")
        if kind == "min_length" and len(value) < argument:
            raise DeploymentRefused(f"{file}: {name} is shorter than {argument}")
        if kind == "max_length" and len(value) > argument:
            raise DeploymentRefused(f"{file}: {name} is longer than {argument}")


def _truth(value: Any) -> bool:
    if isinstance(value, Opaque):
        raise UnknownValue(f"a condition on {value}")
    if not isinstance(value, bool):
        raise TypeError(f"a condition must be a bool, not {value!r}")
    return value


def _folded(value: Any) -> Any:
    """Bicep's == compares strings case-insensitively."""
    return value.lower() if isinstance(value, str) else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _member_path(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    operands = node["operator"]["operands"]
    return _member_path(operands["operand_1"]) + _member_path(operands["operand_2"])


def _member(value: Any, name: str) -> Any:
    if isinstance(value, Opaque):
        return Opaque(f"{value.text}.{name}")
    if isinstance(value, ResourceRef):
        return Opaque(f"{value.symbol}.{name}")
    if isinstance(value, dict):
        return value[name]
    raise TypeError(f"no member {name} on {value!r}")


def _union(*args: Any) -> Any:
    if all(isinstance(arg, dict) for arg in args):
        merged: dict[str, Any] = {}
        for arg in args:
            merged.update(arg)
        return merged
    seen: list[Any] = []
    for arg in args:
        for item in arg:
            if item not in seen:
                seen.append(item)
    return seen


def _concat(*args: Any) -> Any:
    if all(isinstance(arg, list) for arg in args):
        return [item for arg in args for item in arg]
    return "".join(_text(arg) for arg in args)


def _unique_string(*args: Any) -> str:
    return hashlib.sha256("|".join(map(_text, args)).encode()).hexdigest()[:13]


# Functions whose result depends on what their arguments hold, not only on their text.
_NEEDS_KNOWN_ARGUMENTS = frozenset(
    {
        "empty",
        "length",
        "split",
        "trim",
        "to_lower",
        "to_upper",
        "join",
        "contains",
        "items",
        "filter",
        "map",
        "union",
    }
)
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "empty": lambda value: value in ("", None) or (isinstance(value, list | dict) and not value),
    "length": len,
    "split": lambda text, delimiter: text.split(delimiter),
    "trim": lambda text: text.strip(),
    "to_lower": lambda text: _text(text).lower(),
    "to_upper": lambda text: _text(text).upper(),
    "join": lambda items, delimiter: delimiter.join(map(_text, items)),
    "concat": _concat,
    "union": _union,
    "contains": lambda container, item: item in container,
    "items": lambda mapping: [{"key": key, "value": mapping[key]} for key in sorted(mapping, key=str.lower)],
    "filter": lambda items, predicate: [item for item in items if _truth(predicate(item))],
    "map": lambda items, mapper: [mapper(item) for item in items],
    "string": _text,
    "any": lambda value: value,
    "unique_string": _unique_string,
    "guid": lambda *parts: "guid(" + "|".join(map(_text, parts)) + ")",
    "subscription_resource_id": lambda *parts: "/".join(map(_text, parts)),
    "resource_id": lambda *parts: "/".join(map(_text, parts)),
}


def misparsed_expressions(asts: Mapping[str, dict[str, Any]]) -> list[str]:
    """Places where pycep's flat precedence would change the meaning: an operator whose right
    operand is an unparenthesised binary operator or conditional. Write `(a && b) ? x : y`."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        operator = node.get("operator") if set(node) == {"operator"} else None
        if isinstance(operator, dict):
            kind, operands = operator["type"], operator["operands"]
            suspect = operands.get("bool_value") if kind == "not" else operands.get("operand_2")
            if (kind == "not" or kind in _BINARY) and _is_compound(suspect):
                found.append(f"{where}: {kind} over {suspect['operator']['type']}")
        for key, item in node.items():
            walk(
                item,
                f"{where}.{key}" if key not in {"operator", "operands", "function", "parameters"} else where,
            )

    for file, ast in asts.items():
        for section in ("parameters", "variables", "resources", "modules", "outputs"):
            for name, item in ast.get(section, {}).items():
                walk(item, f"{file} {name}")
    return found


def _is_compound(node: Any) -> bool:
    if not isinstance(node, dict) or set(node) != {"operator"}:
        return False
    kind = node["operator"]["type"]
    return kind == "conditional" or kind in _BINARY
