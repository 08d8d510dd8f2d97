"""The offline Bicep renderer itself: it evaluates what the template uses as Resource Manager
does, and it flags the expressions pycep-parser would read with another meaning."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.bicep_render import DeploymentRefused, Opaque, Template, load_asts, misparsed_expressions

MAIN = """
param name string
@allowed(['a', 'b'])
param flavour string = 'a'
@minValue(40)
param count int = 100
param extras string = ''
param strict bool = false
var items = filter(map(split(extras, ','), item => trim(item)), item => !empty(item))
var problem = (strict && empty(items)) ? 'strict needs extras' : ''
resource always 'Microsoft.Example/things@2024-01-01' = {
  name: 'thing-${name}'
  properties: {
    count: count
    flavour: flavour
    note: empty(problem) ? 'fine' : fail(problem)
    owner: subscription().id
  }
}
resource sometimes 'Microsoft.Example/things@2024-01-01' = if (!empty(items)) {
  name: 'extra'
}
module child 'child.bicep' = {
  name: 'child'
  params: {
    names: items
  }
}
"""
CHILD = """
param names array
resource each 'Microsoft.Example/items@2024-01-01' = [for item in names: {
  name: toLower(item)
}]
"""
MISPARSED = """
param p string = ''
param q bool = false
var negatedTernary = !empty(p) ? 'x' : 'y'
var comparisonThenAnd = p == 'x' && q
var fine1 = (!empty(p)) ? 'x' : 'y'
var fine2 = (p == 'x') && q
var fine3 = q ? 'x' : (empty(p) ? 'y' : 'z')
"""


@pytest.fixture(scope="module")
def asts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("bicep")
    for name, text in {"main.bicep": MAIN, "child.bicep": CHILD, "misparsed.bicep": MISPARSED}.items():
        (folder / name).write_text(text)
    return load_asts(sorted(folder.glob("*.bicep")), root=folder)


def test_conditions_loops_lambdas_and_modules_render_as_resource_manager_would(
    asts: dict[str, dict[str, Any]],
) -> None:
    template = Template({k: v for k, v in asts.items() if k != "misparsed.bicep"})
    plain = template.render({"name": "x"})
    assert [(r.symbol, r.body["name"]) for r in plain] == [("always", "thing-x")]
    assert plain[0].properties == {
        "count": 100,
        "flavour": "a",
        "note": "fine",
        "owner": Opaque("subscription().id"),
    }
    extras = template.render({"name": "x", "extras": " A, ,B ", "flavour": "b"})
    assert [(r.symbol, r.body["name"]) for r in extras] == [
        ("always", "thing-x"),
        ("sometimes", "extra"),
        ("each", "a"),
        ("each", "b"),
    ]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"name": "x", "strict": True}, "strict needs extras"),
        ({"name": "x", "flavour": "c"}, "not one of the allowed values"),
        ({"name": "x", "count": 39}, "under its minimum 40"),
        ({"name": "x", "count": "100"}, "must be int"),
        ({}, "parameter name has no value"),
    ],
)
def test_what_resource_manager_would_refuse_is_refused(
    asts: dict[str, dict[str, Any]], params: dict[str, Any], reason: str
) -> None:
    template = Template({k: v for k, v in asts.items() if k != "misparsed.bicep"})
    with pytest.raises(DeploymentRefused, match=reason):
        template.render(params)


def test_expressions_the_offline_parser_misreads_are_flagged(asts: dict[str, dict[str, Any]]) -> None:
    found = misparsed_expressions({"misparsed.bicep": asts["misparsed.bicep"]})
    assert [entry.split(":")[0] for entry in found] == [
        "misparsed.bicep negatedTernary.value",
        "misparsed.bicep comparisonThenAnd.value",
    ]
