from pathlib import Path

from deployments import schema
from deployments.reference import reference
from deployments.setup import SetupConfig


def test_configuration_reference_is_current():
    committed = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    assert committed == reference(), "regenerate: python -m deployments.reference > docs/configuration.md"


def test_every_field_of_the_file_is_documented():
    """Every field at every place of the file has a row and a meaning, e.g. notify.email and schedules."""
    text = reference()
    sections = schema.sections(SetupConfig)
    paths = {p for s in sections for p in s.paths}
    assert {"main", "backup", "main.ssh", "backup.ssh", "notify.email", "notify.webhooks[]", "schedules"} <= paths
    for section in sections:
        heading = text.index("## " + (", ".join(f"`{p}`" for p in section.paths) + ": " if section.paths != ("",) else ""))
        rows = text[heading:text.index("\n## ", heading + 1)]
        for name, field in section.model.model_fields.items():
            assert f"| `{schema.key_of(name, field)}` |" in rows and field.description, (section.paths, name)


def test_webhooks_are_documented_as_the_objects_the_file_takes():
    text = reference()
    assert "| `webhooks` | list of mappings (section below) |" in text
    assert "| `from` | text | required |" in text  # the alias the file uses, not the model's attribute


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
