"""The configuration reference, generated from the models behind the blocks:
``python -m blocks.reference > docs/configuration.md``. A test regenerates it
and fails on any difference, so it cannot drift from the code."""
from __future__ import annotations

import sys

from pydantic import BaseModel

from antelope_ha.config import PairPolicy, SiteConfig, SSHSettings, WitnessConfig
from blocks.pair import NotifyTargets

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Site (`AntelopeSite` block; `main` and `backup` of the pair)", SiteConfig),
    ("SSH settings of a site (`ssh`)", SSHSettings),
    ("Witness (`witness`)", WitnessConfig),
    ("Policy (`policy`)", PairPolicy),
    ("Notification targets (`notify`, an `Antelope HA Notify Targets` block)", NotifyTargets),
]
SKIP = {"block_type_slug"}


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default
    return f"`{value!r}`"


def _type(annotation) -> str:
    text = str(annotation) if getattr(annotation, "__args__", None) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("antelope_ha.config.", "").replace("pydantic.types.", "")


def reference() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the models behind the blocks (`python -m blocks.reference`).",
             "The pair is an `Antelope Pair` block: `main`, `backup`, `witness`, `policy`, `notify`.", ""]
    for title, model in SECTIONS:
        lines += [f"## {title}", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name in SKIP:
                continue
            meaning = (field.description or "").replace("|", "\\|")
            type_text = _type(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | {type_text} | {_default(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference())
