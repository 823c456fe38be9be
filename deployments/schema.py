"""The configuration file as operators write it: every field by its YAML path,
its type in YAML words, its default, its limits and what it means.

Two users: the configuration reference (``python -m deployments.reference``,
docs/configuration.md) and setup's error messages, where each problem names
its field and the fix.
"""
from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Section:
    """One mapping of the file: where it sits (``main``, ``notify.webhooks[]``) and its model."""

    paths: tuple[str, ...]
    model: type[BaseModel]
    title: str


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in _args(annotation)


def _strip_optional(annotation: Any) -> Any:
    if _is_optional(annotation):
        rest = [a for a in _args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    return annotation


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optional, or as list items), and whether as a list."""
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is list:
        inner = _args(annotation)[0]
        return (inner, True) if isinstance(inner, type) and issubclass(inner, BaseModel) else (None, True)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def key_of(name: str, field: FieldInfo) -> str:
    """The field's key in the file (its alias, e.g. ``from``, when it has one)."""
    return field.alias or name


def keys(model: type[BaseModel]) -> list[str]:
    return [key_of(n, f) for n, f in model.model_fields.items()]


def sections(root: type[BaseModel], title: str = "The file") -> list[Section]:
    """Every mapping of the file, in the order a reader meets them (each nested
    section right after its parent), each model once with every path it sits at."""
    found: dict[type[BaseModel], list[str]] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        found.setdefault(model, []).append(path)
        for name, field in model.model_fields.items():
            inner, is_list = _model_in(field.annotation)
            if inner is not None:
                visit(inner, f"{path}.{key_of(name, field)}".lstrip(".") + ("[]" if is_list else ""))

    visit(root, "")
    return [Section(tuple(paths), model, title if model is root else split_doc(model.__doc__)[0])
            for model, paths in found.items()]


def split_doc(doc: str | None) -> tuple[str, str]:
    """A docstring's first sentence (a title, without its full stop) and the rest."""
    text = inspect.cleandoc(doc or "").replace("``", "`")
    first = re.split(r"(?<=\.)\s+(?=[A-Z`])", text, maxsplit=1)[0]
    return " ".join(first.split()).rstrip("."), text[len(first):].strip()


def yaml_type(annotation: Any) -> str:
    """A field's type in the words of the file."""
    optional = _is_optional(annotation)
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        text = "one of " + ", ".join(f"`{a}`" for a in _args(annotation))
    elif origin is list:
        text = f"list of {_plural(yaml_type(_args(annotation)[0]))}"
    elif origin is dict:
        text = f"mapping of {_plural(yaml_type(_args(annotation)[0]))} to {_plural(yaml_type(_args(annotation)[1]))}"
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(yaml_type(a) for a in _args(annotation))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "mapping (section below)"
    else:
        text = {str: "text", int: "integer", float: "number", bool: "true/false", SecretStr: "text (secret)",
                typing.Any: "any value"}.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{text}, optional" if optional else text


def _plural(word: str) -> str:
    return {"text": "texts", "integer": "integers", "number": "numbers", "any value": "any values",
            "mapping (section below)": "mappings (section below)"}.get(word, word)


def default_text(field: FieldInfo) -> str:
    """``required``, or the default as it would be written in the file."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    if value is None:
        return "none"
    return "`" + yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip() + "`"


_BOUNDS = (("ge", ">= {}"), ("gt", "> {}"), ("le", "<= {}"), ("lt", "< {}"),
           ("min_length", "at least {} long"), ("max_length", "at most {} long"))


def limits(field: FieldInfo) -> str:
    """The field's bounds and pattern, e.g. ``>= 1, <= 65535``."""
    out = []
    is_list = typing.get_origin(_strip_optional(field.annotation)) is list
    for item in field.metadata:  # annotated_types' Ge, Le, MinLen, ... and pydantic's pattern
        for attribute, text in _BOUNDS:
            if getattr(item, attribute, None) is not None:
                out.append(text.replace(" long", " entries" if is_list else " long").format(getattr(item, attribute)))
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append(f"matches `{pattern}`")
    return ", ".join(out)


def walk(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model holding the field at ``loc`` (a pydantic error location) and the field."""
    model: type[BaseModel] | None = root
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None, None
        by_key = {key_of(n, f): f for n, f in model.model_fields.items()}
        field = by_key.get(str(part))
        if field is None:
            return model, None
        holder = model
        model = _model_in(field.annotation)[0]
    return (holder if field is not None else model), field


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def fix(root: type[BaseModel], error: Any) -> str:
    """What to do about one pydantic error, in the words of the file."""
    loc = tuple(error["loc"])
    holder, field = walk(root, loc)
    meaning = (field.description or "") if field is not None else ""
    kind = error["type"]
    if kind == "missing":
        inner = _model_in(field.annotation)[0] if field is not None else None
        what = f"the `{loc[-1]}:` section" if inner else f"`{loc[-1]}:`"
        return f"add {what}" + (f": {meaning}" if meaning else "")
    if kind == "extra_forbidden":
        parent = walk(root, loc[:-1])
        model = _model_in(parent[1].annotation)[0] if parent[1] is not None else root
        allowed = ", ".join(keys(model)) if model else "?"
        close = _closest(str(loc[-1]), keys(model) if model else [])
        return (f"did you mean `{close}`? " if close else "") + f"remove it; this section takes: {allowed}"
    if kind == "literal_error":
        return f"write one of {error.get('ctx', {}).get('expected', '?')}"
    if kind == "string_pattern_mismatch":
        return f"write a value matching `{error.get('ctx', {}).get('pattern', '?')}`" + (f": {meaning}" if meaning else "")
    if kind in ("too_short", "too_long") and error.get("ctx", {}).get("field_type") == "List":
        bound = "at least {min_length}" if kind == "too_short" else "at most {max_length}"
        return f"give {bound.format(**error['ctx'])} entries" + (f": {meaning}" if meaning else "")
    if kind in ("value_error", "assertion_error"):
        return "change the value as the message says" + (f" ({meaning})" if meaning else "")
    if kind.endswith(("_type", "_parsing")) and field is not None:
        return f"write {_article(yaml_type(field.annotation))}" + (f": {meaning}" if meaning else "")
    bounds = limits(field) if field is not None else ""
    return "write a value " + (f"that is {bounds}" if bounds else "that fits") + (f": {meaning}" if meaning else "")


def _article(text: str) -> str:
    return text if text.startswith(("one of", "list", "mapping", "true")) else f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def _closest(word: str, candidates: list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return found[0] if found else None


def problems(root: type[BaseModel], exc: ValidationError) -> Iterator[str]:
    """One line per problem: the field, what is wrong, and the fix."""
    for error in exc.errors():
        message = re.sub(r"^Value error, ", "", error["msg"])
        yield f"  {_where(tuple(error['loc']))}: {message}\n      fix: {fix(root, error)}"
