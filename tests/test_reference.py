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


def test_every_deployed_flow_parameter_is_described_for_the_run_form():
    """The UI's run form shows each parameter's description (from the flow's docstring)."""
    import importlib

    import yaml
    from prefect.utilities.callables import parameter_schema

    spec = yaml.safe_load((Path(__file__).parent.parent / "deployments" / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in spec["deployments"]}
    assert len(entrypoints) == 6
    for entrypoint in sorted(entrypoints):
        path, name = entrypoint.split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        properties = parameter_schema(flow.fn).properties
        undescribed = [p for p, schema in properties.items() if not schema.get("description")]
        assert not undescribed, f"{entrypoint}: no description for {undescribed}"
