"""Shared machinery of the API models: one base class and the cross-field rules.

A cross-field rule (champion and candidate differ, rollback no stricter than success, ...) must be
enforced twice: by the kube-apiserver at admission, as a CEL ``x-kubernetes-validations`` entry in
the generated CRD, and by the pydantic models, for the CLI and the operator's own checks. Writing
the two separately invites drift, so each rule is declared once as a :class:`Rule` that carries
both the CEL expression and a Python predicate that mirrors it, with one message shared by both.
The CRD generator reads the CEL half; the validators below run the Python half. A unit test runs
the same invalid corpus through both.

Rules attach in two places:

* on a model, listed in its ``cel_rules`` class variable (checked after the model's fields are
  valid, so the predicate can rely on them);
* on a single field, as ``Annotated[..., Rule(...)]`` metadata (strings and arrays).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Numbers and booleans are strict, as they are in the apiserver: "10" is not an integer and "yes"
# is not a boolean. (Strict floats still take integers, like OpenAPI's number.)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]

#: Error type of a failed rule in pydantic's error list.
RULE_ERROR = "lvm_rule"


@dataclass(frozen=True)
class Rule:
    """One validation rule in both languages.

    ``cel`` runs in the kube-apiserver with ``self`` bound to the object (or field) the rule is
    attached to; ``check`` receives the validated pydantic value in the same place and must return
    the same truth value for every input that passes the OpenAPI part of the schema. ``message``
    names the field so that both sides report it the same way. ``field_path`` (relative, starting
    with ``.``) points the apiserver's error at a child field; ``reason`` is one of Kubernetes'
    ``FieldValueInvalid`` (default), ``FieldValueRequired``, ``FieldValueForbidden``,
    ``FieldValueDuplicate``.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def to_validation(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry

    def error(self) -> PydanticCustomError:
        # Messages are plain text: escape braces, which pydantic treats as placeholders.
        text = self.message.replace("{", "{{").replace("}", "}}")
        return PydanticCustomError(RULE_ERROR, text, {"field_path": self.field_path or ""})

    # Used as ``Annotated[T, Rule(...)]`` metadata: validate after T, and add the CEL rule to the
    # field's JSON schema.
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            if not self.check(value):
                raise self.error()
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        if "$ref" in json_schema:  # a shared definition: never attach field rules to it
            raise TypeError("attach Rule metadata to strings and arrays, not to models")
        json_schema["x-kubernetes-validations"] = [
            *json_schema.get("x-kubernetes-validations", []),
            self.to_validation(),
        ]
        return json_schema


class ApiModel(BaseModel):
    """Base of every API model: camelCase JSON names, unknown fields rejected, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    #: Cross-field rules of this model (see the module docstring).
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    def to_k8s(self) -> dict[str, Any]:
        """The object as Kubernetes JSON: camelCase names, RFC3339 times, unset fields left out.

        (For a merge patch that must *remove* a field, add an explicit ``None`` for it.)
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failed = [rule for rule in type(self).cel_rules if not rule.check(self)]
        if not failed:
            return self
        if len(failed) == 1:
            raise failed[0].error()
        # pydantic reports one error per validator; keep every message in it.
        text = "; ".join(rule.message for rule in failed).replace("{", "{{").replace("}", "}}")
        raise PydanticCustomError(RULE_ERROR, text, {"field_path": ""})

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(json_schema)
            target["x-kubernetes-validations"] = [rule.to_validation() for rule in cls.cel_rules]
        return json_schema
