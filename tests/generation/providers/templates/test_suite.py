"""The generated test modules: every test the templates write is one pytest will collect."""

from __future__ import annotations

import ast

from service.generation.providers.templates.plan import plan_project
from service.generation.providers.templates.suite import app_tests, entity_tests
from service.spec import Spec


def defined_tests(source: str) -> list[str]:
    return [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def test_colliding_test_names_are_numbered_so_none_replaces_another() -> None:
    # Two referrers, Line.item_ref and LineItem.ref, would both name their test
    # "..._line_item_ref_refers_to_it": a second def of one name would silently replace the
    # first, and its test would never run.
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [
                {"name": "Target", "fields": {"title": "str"}},
                {"name": "Line", "fields": {"item_ref": "Target"}},
                {"name": "LineItem", "fields": {"ref": "Target"}},
            ],
        }
    )
    plan = plan_project(spec)
    text = entity_tests(plan, plan.entity("Target"))
    compile(text, "test_target.py", "exec", dont_inherit=True)
    names = defined_tests(text)
    assert len(names) == len(set(names)) == 7 + 2
    assert "test_delete_is_refused_while_line_item_ref_refers_to_it" in names
    assert "test_delete_is_refused_while_line_item_ref_refers_to_it_2" in names


def test_every_entity_and_the_app_get_their_tests() -> None:
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [
                {"name": "Customer", "fields": {"name": "str"}},
                {"name": "Order", "fields": {"buyer": "Customer", "note": "str"}},
            ],
        }
    )
    plan = plan_project(spec)
    app = app_tests(plan)
    compile(app, "test_app.py", "exec", dont_inherit=True)
    assert "'/customers',\n        '/orders',\n" in app
    order = defined_tests(entity_tests(plan, plan.entity("Order")))
    customer = defined_tests(entity_tests(plan, plan.entity("Customer")))
    assert {"test_a_missing_buyer_is_refused", "test_an_existing_buyer_is_accepted"} < set(order)
    assert "test_delete_is_refused_while_order_buyer_refers_to_it" in customer
    assert not any("refers_to_it" in name for name in order)
