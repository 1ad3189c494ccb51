"""The whole LVMRollout object, its API names, and :func:`parse_rollout`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError

from .base import RULE_ERROR, ApiModel
from .durations import DURATION_PATTERN
from .spec import (
    DNS_LABEL_PATTERN,
    HTTP_URL_PATTERN,
    KEY_PATTERN,
    NAME_PATTERN,
    SHA256_PATTERN,
    URI_PATTERN,
    LVMRolloutSpec,
)
from .status import LVMRolloutStatus

GROUP = "lvm.rollout.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LVMRollout"
LIST_KIND = "LVMRolloutList"
PLURAL = "lvmrollouts"
SINGULAR = "lvmrollout"
SHORT_NAMES = ("lvmr",)
CRD_NAME = f"{PLURAL}.{GROUP}"


class LVMRollout(ApiModel):
    """An LVMRollout as stored by the apiserver. ``metadata`` is kept as the apiserver sent it."""

    api_version: Literal["lvm.rollout.io/v1alpha1"] = Field(API_VERSION)
    kind: Literal["LVMRollout"] = Field(KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LVMRolloutSpec
    status: LVMRolloutStatus | None = None

    @property
    def name(self) -> str | None:
        return self.metadata.get("name")

    @property
    def namespace(self) -> str | None:
        return self.metadata.get("namespace")


class InvalidRolloutError(ValueError):
    """An LVMRollout (or its spec) failed validation.

    ``problems`` holds ``(field path, message)`` pairs, the path in Kubernetes' notation
    (``spec.steps[2].weight``); ``str()`` lists them one per line.
    """

    def __init__(self, what: str, problems: list[tuple[str, str]]):
        self.what = what
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"invalid {what}:\n{lines}")


#: What each pattern means, for messages a person can act on.
_PATTERN_HINTS = {
    DURATION_PATTERN: "expected a Go-style duration such as 30s, 5m, 168h or 1h30m",
    DNS_LABEL_PATTERN: "expected a DNS-1123 label: lower-case letters, digits and '-', "
    "starting and ending with a letter or digit",
    URI_PATTERN: "expected file:///path, an absolute path, s3://bucket/key, gs://bucket/key or "
    "https://host/path",
    HTTP_URL_PATTERN: "expected an http:// or https:// URL",
    SHA256_PATTERN: "expected 64 lower-case hex digits",
    NAME_PATTERN: "expected letters, digits, '-', '_' or '.', starting and ending with a letter "
    "or digit",
    KEY_PATTERN: "expected a field name such as user_id",
}


def _path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def problems_of(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(field path, message)`` pairs that name the field."""
    problems = []
    for item in error.errors(include_url=False):
        path = _path(tuple(item["loc"]), prefix)
        message = item["msg"]
        if item["type"] == RULE_ERROR:
            path += (item.get("ctx") or {}).get("field_path", "")
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "string_pattern_mismatch":
            pattern = (item.get("ctx") or {}).get("pattern", "")
            hint = _PATTERN_HINTS.get(pattern, f"expected a match for {pattern}")
            message = f"invalid value {_short(item.get('input'))}: {hint}"
        elif not isinstance(item.get("input"), dict | list):
            message = f"{message} (got {_short(item.get('input'))})"
        problems.append((path or "<root>", message))
    return problems


def _describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and metadata.get("name"):
        ns = metadata.get("namespace")
        return f"{KIND} {ns + '/' if ns else ''}{metadata['name']}"
    return KIND


def parse_rollout(obj: Mapping[str, Any]) -> LVMRollout:
    """Validate a whole LVMRollout object (as a dict, e.g. loaded from YAML or from the apiserver).

    Defaults are filled in exactly as the apiserver fills them. Raises
    :class:`InvalidRolloutError` with one line per problem, each naming the field.
    """
    if not isinstance(obj, Mapping):
        raise InvalidRolloutError(
            KIND, [("<root>", f"expected a mapping, got {type(obj).__name__}")]
        )
    try:
        return LVMRollout.model_validate(dict(obj))
    except ValidationError as exc:
        raise InvalidRolloutError(_describe(obj), problems_of(exc)) from None


def parse_spec(spec: Mapping[str, Any]) -> LVMRolloutSpec:
    """Validate only the ``spec`` of an LVMRollout (what a Kopf handler receives)."""
    if not isinstance(spec, Mapping):
        raise InvalidRolloutError(
            f"{KIND} spec", [("spec", f"expected a mapping, got {type(spec).__name__}")]
        )
    try:
        return LVMRolloutSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidRolloutError(f"{KIND} spec", problems_of(exc, "spec")) from None


def parse_status(status: Mapping[str, Any] | None) -> LVMRolloutStatus:
    """Validate an LVMRollout ``status`` (``None`` or ``{}`` give an empty status)."""
    try:
        return LVMRolloutStatus.model_validate(dict(status or {}))
    except ValidationError as exc:
        raise InvalidRolloutError(f"{KIND} status", problems_of(exc, "status")) from None
