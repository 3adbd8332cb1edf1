"""The generated code's layout: lines that depend on user names wrap, and stay valid Python."""

from __future__ import annotations

import ast

from service.generation.providers.templates.layout import LINE, all_list, source, wrap_def


def test_source_ends_every_line_with_a_newline() -> None:
    assert source(["a", "", "b"]) == "a\n\nb\n"
    assert source(["x = (\n    1\n)"]) == "x = (\n    1\n)\n"


def test_a_def_that_fits_stays_on_one_line() -> None:
    assert wrap_def("payload_user", "client: Client, variant: int = 0", "dict[str, Any]") == [
        "def payload_user(client: Client, variant: int = 0) -> dict[str, Any]:"
    ]


def test_a_def_too_long_for_a_line_wraps_its_parameters_and_still_compiles() -> None:
    name = "payload_" + "a_long_entity_module_name_" * 3
    lines = wrap_def(name, "client: Client, variant: int = 0", "dict[str, Any]")
    assert len(lines) == 3
    assert all(len(line) <= LINE for line in lines)
    function = ast.parse(source([*lines, "    return {}"])).body[0]
    assert isinstance(function, ast.FunctionDef)
    assert function.name == name
    assert [arg.arg for arg in function.args.args] == ["client", "variant"]


def exported(lines: list[str]) -> list[str]:
    (assignment,) = ast.parse(source(lines)).body
    assert isinstance(assignment, ast.Assign)
    names = ast.literal_eval(assignment.value)
    assert isinstance(names, list)
    return names


def test_an_all_list_that_fits_is_one_line() -> None:
    lines = all_list(["customer", "order"])
    assert lines == ["__all__ = ['customer', 'order']"]
    assert exported(lines) == ["customer", "order"]


def test_an_all_list_too_long_for_a_line_puts_one_name_on_each() -> None:
    names = [f"entity_module_number_{index}" for index in range(6)]
    lines = all_list(names)
    assert len(lines) == len(names) + 2
    assert all(len(line) <= LINE for line in lines)
    assert exported(lines) == names


def test_an_all_list_of_exactly_the_line_length_stays_on_one_line() -> None:
    name = "m" * (LINE - len("__all__ = ['']"))
    (line,) = all_list([name])
    assert len(line) == LINE
    assert len(all_list([name + "m"])) == 3
