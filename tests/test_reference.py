from pathlib import Path

from blocks.reference import reference
from blocks.pair import NotifyTargets
from antelope_ha.config import SiteConfig


def test_configuration_reference_is_current():
    committed = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    assert committed == reference(), "regenerate: python -m blocks.reference > docs/configuration.md"


def test_every_field_is_documented():
    text = reference()
    for model in (SiteConfig, NotifyTargets):
        for name, field in model.model_fields.items():
            if name != "block_type_slug":
                assert f"| `{name}` |" in text and field.description, name
