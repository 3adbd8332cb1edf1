"""The HTTP routes: ``app/api/``, one module per entity, each with one Litestar controller.

The controller lists, creates, gets, replaces and deletes rows. References are checked here,
since the in-process store knows nothing of them: creating or replacing a row whose reference
points to no row answers 422 naming every such field, and deleting a row that other rows still
refer to answers 409 naming them (a row's reference to itself does not block its deletion).
Only an entity that has references, or is referred to, gets that code and its imports, so no
generated module carries dead code.
"""

from __future__ import annotations

from service.generation.providers.templates.layout import package_init, source
from service.generation.providers.templates.plan import EntityPlan, Plan
from service.generation.providers.templates.quoting import docstring, py_str


def api_init(plan: Plan) -> str:
    return package_init(
        "The HTTP routes: one module per entity, each with one Litestar controller.",
        "app.api",
        [entity.module for entity in plan.entities],
    )


def api(plan: Plan, entity: EntityPlan) -> str:
    exceptions = "NotFoundException"
    if entity.references or entity.referrers:  # a 422 or a 409 to raise
        exceptions = "HTTPException, NotFoundException"
    lines = [
        docstring(
            f"HTTP routes of {entity.name} at {entity.path}: list, create, get, replace and "
            "delete.\n\n"
            "Unknown ids answer 404; a reference to a missing row answers 422; deleting a row\n"
            "that other rows refer to answers 409."
        ),
        "",
        "from __future__ import annotations",
        "",
        "from typing import Annotated",
        "from uuid import UUID, uuid4",
        "",
        "from litestar import Controller, delete, get, post, put",
        "from litestar.di import NamedDependency",
        f"from litestar.exceptions import {exceptions}",
        "from litestar.params import FromPath, JSONBody, QueryParameter",
        "",
        "from app.database import Database",
        f"from app.models import {entity.module} as models",
        "from app.settings import Settings",
        "",
        f"REPOSITORY = {py_str(entity.module)}",
    ]
    if entity.references:
        lines += [
            "# (field, attribute, referenced entity, its repository) of every reference",
            "REFERENCES: tuple[tuple[str, str, str, str], ...] = (",
        ]
        for field in entity.references:
            target = plan.entity(field.target or "")
            lines.append(
                f"    ({py_str(field.name)}, {py_str(field.attr)}, {py_str(target.name)}, "
                f"{py_str(target.module)}),"
            )
        lines += [")"]
    if entity.referrers:
        lines += [
            "# (entity, its repository, field, attribute) of every reference to this entity",
            "REFERRERS: tuple[tuple[str, str, str, str], ...] = (",
        ]
        for referrer, field in entity.referrers:
            lines.append(
                f"    ({py_str(referrer)}, {py_str(plan.entity(referrer).module)}, "
                f"{py_str(field.name)}, {py_str(field.attr)}),"
            )
        lines += [")"]
    lines += [
        "",
        "",
        "def not_found(row_id: UUID) -> NotFoundException:",
        f'    return NotFoundException(detail=f"no {entity.name} with id {{row_id}}")',
        "",
        "",
        f"def to_row(row_id: UUID, data: models.{entity.name}Create) -> models.{entity.name}:",
        f"    return models.{entity.name}.model_validate(",
        f"        {{{py_str(entity.key)}: row_id, **data.model_dump(by_alias=True)}}",
        "    )",
    ]
    if entity.references:
        lines += [
            "",
            "",
            f"async def check_references(db: Database, data: models.{entity.name}Create) -> None:",
            '    """422 naming every reference that points to no row of its entity."""',
            "    missing: list[dict[str, str]] = []",
            "    for field, attribute, entity, repository in REFERENCES:",
            "        value = getattr(data, attribute)",
            "        if value is not None and not await db.repository(repository).exists(value):",
            '            missing.append({"field": field, "entity": entity, "id": str(value)})',
            "    if missing:",
            '        names = ", ".join(item["field"] for item in missing)',
            "        raise HTTPException(",
            "            status_code=422,",
            '            detail=f"references to rows that do not exist: {names}",',
            '            extra={"missing": missing},',
            "        )",
        ]
    if entity.referrers:
        lines += [
            "",
            "",
            "async def find_referrers(db: Database, row_id: UUID) -> list[dict[str, str]]:",
            '    """The other rows that refer to this one."""',
            "    found: list[dict[str, str]] = []",
            "    for entity, repository, field, attribute in REFERRERS:",
            "        ids = await db.repository(repository).ids_where(",
            "            lambda row, attribute=attribute: getattr(row, attribute) == row_id",
            "        )",
            "        found.extend(",
            '            {"entity": entity, "field": field, "id": str(other)}',
            "            for other in ids",
            "            if not (repository == REPOSITORY and other == row_id)",
            "        )",
            "    return found",
        ]
    check = ["        await check_references(db, data)"] if entity.references else []
    lines += [
        "",
        "",
        f"class {entity.name}Controller(Controller):",
        docstring(f"The rows of {entity.name}.", "    "),
        "",
        f"    path = {py_str(entity.path)}",
        f"    tags = [{py_str(entity.name)}]",
        "",
        "    @get()",
        "    async def list_rows(",
        "        self,",
        "        db: NamedDependency[Database],",
        "        settings: NamedDependency[Settings],",
        "        offset: Annotated[int, QueryParameter(ge=0)] = 0,",
        "        limit: Annotated[int | None, QueryParameter(ge=1)] = None,",
        f"    ) -> list[models.{entity.name}]:",
        '        """Rows in creation order; ``limit`` is capped at the max page size."""',
        "        size = settings.max_page_size",
        "        if limit is not None:",
        "            size = min(limit, size)",
        "        return await db.repository(REPOSITORY).list(offset=offset, limit=size)",
        "",
        "    @post()",
        "    async def create_row(",
        f"        self, db: NamedDependency[Database], data: JSONBody[models.{entity.name}Create]",
        f"    ) -> models.{entity.name}:",
        *check,
        "        row_id = uuid4()",
        "        row = to_row(row_id, data)",
        "        await db.repository(REPOSITORY).create(row_id, row)",
        "        return row",
        "",
        '    @get("/{row_id:uuid}")',
        "    async def get_row(",
        "        self, db: NamedDependency[Database], row_id: FromPath[UUID]",
        f"    ) -> models.{entity.name}:",
        "        row = await db.repository(REPOSITORY).get(row_id)",
        "        if row is None:",
        "            raise not_found(row_id)",
        "        return row",
        "",
        '    @put("/{row_id:uuid}")',
        "    async def replace_row(",
        "        self,",
        "        db: NamedDependency[Database],",
        "        row_id: FromPath[UUID],",
        f"        data: JSONBody[models.{entity.name}Create],",
        f"    ) -> models.{entity.name}:",
        "        repository = db.repository(REPOSITORY)",
        "        if not await repository.exists(row_id):",
        "            raise not_found(row_id)",
        *check,
        "        row = to_row(row_id, data)",
        "        await repository.update(row_id, row)",
        "        return row",
        "",
        '    @delete("/{row_id:uuid}")',
        "    async def delete_row(",
        "        self, db: NamedDependency[Database], row_id: FromPath[UUID]",
        "    ) -> None:",
        "        repository = db.repository(REPOSITORY)",
        "        if not await repository.exists(row_id):",
        "            raise not_found(row_id)",
    ]
    if entity.referrers:
        lines += [
            "        referrers = await find_referrers(db, row_id)",
            "        if referrers:",
            "            raise HTTPException(",
            "                status_code=409,",
            f'                detail="other rows refer to this {entity.name}",',
            '                extra={"referrers": referrers},',
            "            )",
        ]
    lines += ["        await repository.delete(row_id)"]
    return source(lines)
