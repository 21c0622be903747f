"""Every key a config class takes, with its type, default and range: what ``--help`` lists, so a user never has to
open the source to find a knob (``data.augment``'s fifteen keys included)."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

_BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config class a field holds (also inside ``X | None``), or None for a leaf."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``list[float]``, ``white|pink|brown``: short and readable."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _range(field: FieldInfo) -> str:
    """Bounds on the value (``> 0``, ``>= 0, <= 1``) from the field and from an Annotated type it holds."""
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):
        if typing.get_origin(arg) is typing.Annotated:
            metadata += [m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a])]
    parts = []
    for m in metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(m, kind):
                parts.append(f"{sign} {getattr(m, attr)}")
    return ", ".join(dict.fromkeys(parts))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    text = repr(value.model_dump() if isinstance(value, BaseModel) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def leaf_keys(cls: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) for every leaf of ``cls``, sections depth-first in declaration order."""
    for name, field in cls.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            yield from leaf_keys(section, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def describe_keys(cls: type[BaseModel]) -> list[str]:
    """One line per leaf key: ``key  type  default  [range]  first sentence of its description``."""
    lines = []
    for key, field in leaf_keys(cls):
        bounds = _range(field)
        about = (field.description or "").split(". ")[0].rstrip(".")
        about = about if len(about) <= 90 else about[:87] + "..."
        lines.append(f"  {key}  ({type_name(field.annotation)}; default {_default(field)}"
                     f"{'; ' + bounds if bounds else ''})  {about}".rstrip())
    return lines


def example_override(cls: type[BaseModel]) -> str:
    """A ``--set`` example this config takes (``train.max_steps=20`` where it has that key)."""
    keys = dict(leaf_keys(cls))
    if "train.max_steps" in keys:
        return "train.max_steps=20"
    key, field = next((k, f) for k, f in keys.items() if isinstance(f.default, int | float | str) and
                      not isinstance(f.default, bool))
    return f"{key}={field.default}"
