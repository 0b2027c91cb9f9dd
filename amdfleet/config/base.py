"""What every stack section shares: the frozen, ``extra="forbid"`` base model, the
name patterns and the runtime literal (the precisions are the catalog's)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Runtime = Literal["docker", "process"]

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
CONFIG_KEY_RE = r"^[A-Za-z][A-Za-z0-9_]*$"
SIZE_RE = r"^[1-9][0-9]*[kmgKMG]?$"


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _check_env_names(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not re.fullmatch(ENV_NAME_RE, k)]
    if bad:
        raise ValueError(
            f"invalid environment variable name(s): {', '.join(bad)} — use letters, "
            "digits and underscores, not starting with a digit"
        )
    return value


# Environment variables a section adds (engine, fabric): names a shell can export.
EnvVars = Annotated[
    dict[str, str],
    AfterValidator(_check_env_names),
    Field(json_schema_extra={"propertyNames": {"pattern": ENV_NAME_RE}}),
]
