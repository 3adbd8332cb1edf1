"""The plan: the names every template agrees on, decided from the spec by the naming rules."""

from __future__ import annotations

import ast
from typing import Any

from service.generation.providers.templates.plan import Plan, plan_project
from service.spec import Entity, Spec


def planned(*entities: dict[str, Any]) -> Plan:
    return plan_project(Spec.model_validate({"project": "p", "entities": list(entities)}))


def test_a_reference_is_nullable_exactly_when_it_is_part_of_a_cycle() -> None:
    plan = planned(
        {"name": "Employee", "fields": {"manager": "Employee", "team": "Team"}},
        {"name": "Team", "fields": {"lead": "Employee", "office": "Office"}},
        {"name": "Office", "fields": {"city": "str"}},
        {"name": "Visitor", "fields": {"host": "ref:Employee"}},
    )
    nullable = {
        (entity.name, field.name): field.nullable
        for entity in plan.entities
        for field in entity.fields
    }
    assert nullable == {
        ("Employee", "manager"): True,  # to itself
        ("Employee", "team"): True,  # Employee -> Team -> Employee
        ("Team", "lead"): True,
        ("Team", "office"): False,  # Office refers to nothing
        ("Office", "city"): False,
        ("Visitor", "host"): False,  # nothing refers back to Visitor
    }


def test_every_entity_knows_which_fields_refer_to_it() -> None:
    plan = planned(
        {"name": "Customer", "fields": {"name": "str"}},
        {"name": "Order", "fields": {"buyer": "Customer", "payer": "ref:Customer"}},
        {"name": "Refund", "fields": {"customer": "Customer", "order": "Order"}},
    )
    referrers = {
        entity.name: [(name, field.name) for name, field in entity.referrers]
        for entity in plan.entities
    }
    assert referrers == {
        "Customer": [("Order", "buyer"), ("Order", "payer"), ("Refund", "customer")],
        "Order": [("Refund", "order")],
        "Refund": [],
    }
    assert [field.name for field in plan.entity("Refund").references] == ["customer", "order"]


def test_the_row_id_steps_aside_for_fields_named_id() -> None:
    # The spec refuses a field named id; the plan still copes, as awkward_spec shows.
    spec = Spec.model_construct(
        project="p",
        entities=[
            Entity.model_construct(name="A", fields={"id": "int", "id_": "str"}, description=None)
        ],
    )
    (entity,) = plan_project(spec).entities
    assert entity.key == "id__"
    assert [field.attr for field in entity.fields] == ["id", "id_"]


def test_names_pydantic_cannot_hold_move_to_an_attribute_aliased_to_the_name() -> None:
    plan = planned(
        {
            "name": "Odd",
            "fields": {
                "_secret": "str",
                "model_config": "str",
                "json": "str",
                "f_json": "str",
                "copy": "bool",
                "plain": "int",
            },
        }
    )
    attrs = {field.name: field.attr for field in plan.entities[0].fields}
    assert attrs == {
        "_secret": "f_secret",
        "model_config": "f_model_config",
        "json": "f_json_",  # f_json is the spec's own field
        "f_json": "f_json",
        "copy": "f_copy",
        "plain": "plain",
    }
    aliased = {field.name for field in plan.entities[0].fields if field.aliased}
    assert aliased == {"_secret", "model_config", "json", "copy"}


def test_annotations_are_valid_python_that_name_the_alias_and_the_default() -> None:
    plan = planned(
        {"name": "Node", "fields": {"parent": "Node", "_tag": "str", "at": "datetime"}},
    )
    annotations = [field.annotation for field in plan.entities[0].fields]
    assert annotations == [
        "typing.Annotated[uuid.UUID | None, pydantic.Field(default=None)]",
        "typing.Annotated[str, pydantic.Field(alias='_tag')]",
        "datetime.datetime",
    ]
    for annotation in annotations:
        ast.parse(annotation, mode="eval")


def test_samples_are_valid_literals_that_differ_between_variants_and_fields() -> None:
    types = ["str", "int", "float", "bool", "datetime", "uuid"]
    plan = planned({"name": "T", "fields": {f"{name}_field": name for name in types}})
    fields = plan.entities[0].fields
    values = [[ast.literal_eval(field.sample(variant)) for field in fields] for variant in (0, 1)]
    assert all(first != second for first, second in zip(*values, strict=True))
    for field in fields:
        assert ast.literal_eval(field.wrong_value) != ast.literal_eval(field.sample(0))
    two_ints = planned({"name": "T", "fields": {"a": "int", "b": "int"}}).entities[0].fields
    assert two_ints[0].sample(0) != two_ints[1].sample(0)
