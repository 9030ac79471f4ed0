"""Model cards come from the ONNX metadata; the shipped Markdown cards must match their models."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cxr_infer.bundled import bundled_models
from cxr_infer.cli import main


def card(*args: str) -> str:
    result = CliRunner().invoke(main, ["info", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_markdown_card_carries_contract_provenance_and_limits(tiny_model_path):
    text = card(tiny_model_path, "--markdown")
    for heading in ("# Model card:", "## How it was trained", "## Metrics", "## Limitations"):
        assert heading in text
    assert "covid, normal, pneumonia" in text and "not for clinical use" in text


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_shipped_card_is_the_models_own(name):
    """A retrained model shipped without regenerating its card fails here."""
    model = bundled_models()[name]
    shipped = model.with_suffix(".md")
    assert shipped.exists(), f"{shipped} missing: run cxr-infer info {model} --markdown > {shipped}"
    assert shipped.read_text() == card(model, "--markdown")


def test_default_model_is_bundled_and_chosen_on_validation():
    """The README's quick start runs the default; the rule for choosing it is the best macro-F1
    on the validation split. External is a test set and never a selection criterion."""
    from cxr_infer.bundled import default_model_name

    models = bundled_models()
    default = default_model_name()
    assert default in models, f"exported/models.json names {default!r}, bundled: {sorted(models)}"
    val = {}
    for name, path in models.items():
        metrics = json.loads(card(path, "--json"))["metrics"]
        assert "cxr3-external" in metrics and "cxr3-internal/test" in metrics, f"{name} lacks its test reports"
        val[name] = metrics["cxr3-internal/val"]["macro_f1"]
    assert val[default] == max(val.values()), val
