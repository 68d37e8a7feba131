"""The DAGs' Params, written once: limits taken from the pipeline config's own fields, shared patterns.

A Param's default comes from the config, so a Param narrower than the config's field would make a
valid config's DAG fail to parse ("default values are not valid", naming no field). The limits are
therefore read from the JSON schema pydantic derives from the config's fields: every config that
loads gives DAGs that parse.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

#: Every pattern ends with `$(?!\n)`: in Python, jsonschema's `$` alone also accepts one trailing newline.
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$(?!\n)"
#: A reason is recorded on the model version and in the ledger, and rendered into argv: plain text only.
REASON_PATTERN = r"^[A-Za-z0-9 _.,:;()/+=-]*$(?!\n)"
REASON_CHARACTERS = "Letters, digits, spaces and . , : ; ( ) / + = - _ only."
#: The JSON-schema keywords that bound a value; pydantic writes a field's limits with these.
LIMIT_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")


def field_limits(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The bounds of one config field as JSON-schema keywords (``{"minimum": 0, "maximum": 500}``)."""
    schema = model.model_json_schema()["properties"][name]
    return {keyword: schema[keyword] for keyword in LIMIT_KEYWORDS if keyword in schema}


def config_param(
    default: Any, model: type[BaseModel], name: str, *, title: str, description: str, **schema: Any
) -> Param:
    """A Param for a config field: its default, and at least the field's limits (``schema`` may add more)."""
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(default)]
    limits = {**field_limits(model, name), **schema}
    return Param(default, type=json_type, title=title, description=description, **limits)


def reason_param(default: str, description: str) -> Param:
    """Why a run changes the registry: short plain text, recorded with the change."""
    return Param(
        default,
        type="string",
        minLength=1,
        maxLength=200,
        pattern=REASON_PATTERN,
        title="Reason",
        description=f"{description} {REASON_CHARACTERS}",
    )


def day_param(title: str, description: str) -> Param:
    """An optional ``YYYY-MM-DD`` day."""
    return Param(None, type=["null", "string"], pattern=DAY_PATTERN, title=title, description=description)


def force_param() -> Param:
    """``force``: run the cacheable steps even where an earlier run with the same inputs can be reused."""
    return Param(
        False,
        type="boolean",
        title="Force a rerun",
        description="Run every step again, even one whose inputs (data, code, config, options) are "
        "unchanged since a successful run whose outputs it would otherwise reuse (step caching).",
    )
