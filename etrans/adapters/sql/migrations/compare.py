"""The options that make Alembic's comparison (autogenerate, :func:`..drift`) strict and
limited to our own tables, shared by ``env.py`` and the drift check."""

from __future__ import annotations

from typing import Any

from etrans.adapters.sql.migrations import VERSION_TABLE


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # Only tables the models know: a USEND DB shared with other software keeps its own tables.
    if type_ == "table":
        from etrans.adapters.sql.usend import UsendBase

        return name in UsendBase.metadata.tables
    return True


def comparison_options() -> dict[str, Any]:
    from etrans.adapters.sql.usend import UsendBase

    return {
        "target_metadata": UsendBase.metadata,
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "compare_server_default": True,
        "include_name": include_name,
    }
