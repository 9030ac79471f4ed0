"""Bundled models: ONNX files shipped in ``exported/`` (installed as ``cxr_infer.exported``).

Every ``*.onnx`` there is a model named after its file stem; ``models.json`` names the default
(``{"default": "NAME"}``). ``--model`` takes a bundled name or a path to any ``.onnx`` file.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

MODELS_FILE = "models.json"


class ModelNotFoundError(LookupError):
    """No model matches the request; the message lists what is available."""


def exported_dir() -> Path:
    return Path(str(files("cxr_infer.exported")))


def bundled_models() -> dict[str, Path]:
    """Name -> file of every bundled model, sorted by name."""
    return {path.stem: path for path in sorted(exported_dir().glob("*.onnx"))}


def default_model_name() -> str | None:
    """The default recorded in ``models.json``, or ``None`` when none is set."""
    path = exported_dir() / MODELS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ModelNotFoundError(f"{path}: not valid JSON ({error})") from error
    return data.get("default")


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    """The ONNX file for a bundled name, a file path, or (``None``) the default model."""
    models = bundled_models()
    if name_or_path is None:
        name_or_path = default_model_name()
        if name_or_path is None:
            raise ModelNotFoundError(_no_default(models))
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    if candidate.suffix == ".onnx" or len(candidate.parts) > 1:
        raise ModelNotFoundError(f"{candidate}: model file not found")
    raise ModelNotFoundError(f"no bundled model named {str(name_or_path)!r}; {_listing(models)}")


def _listing(models: dict[str, Path]) -> str:
    if not models:
        return f"this installation bundles no model ({exported_dir()} holds no .onnx file)"
    return "bundled: " + ", ".join(models)


def _no_default(models: dict[str, Path]) -> str:
    return (
        f"no default model: {_listing(models)} and {MODELS_FILE} names no default; "
        "pass --model FILE.onnx (a model exported with `cxr-train export`) or a bundled name"
    )
