"""``cxr-train``: fit, evaluate, check splits, export and verify models."""

from __future__ import annotations

import json

import click

from cxr_infer import __version__
from cxr_infer.plugins import describe_plugins
from cxr_train.plugins import get_plugin_manager


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxr-train")
def main() -> None:
    """Train, evaluate and export chest X-ray classifiers."""


@main.command()
def plugins() -> None:
    """List loaded plugins (built-in and installed) as JSON: name, version, hooks."""
    click.echo(json.dumps(describe_plugins(get_plugin_manager()), indent=2))
