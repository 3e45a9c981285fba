"""`lagpilot`: one command line for people. Each command group lives in its own module (cli_*.py)."""

from __future__ import annotations

import importlib

import click

# module name -> attribute holding a click command or group; registered when the module exists.
COMMAND_MODULES = {
    "lagpilot.cli.lab": "lab",
    "lagpilot.cli.lag": "lag",
    "lagpilot.cli.status": "COMMANDS",
    "lagpilot.cli.demo": "demo",
    "lagpilot.cli.grants": "COMMANDS",
    "lagpilot.cli.replay": "COMMANDS",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lagpilot")
def main() -> None:
    """lagpilot: Kafka -> HTTP consumer groups on Kubernetes."""


def _register() -> None:
    for module_name, attr in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        value = getattr(module, attr)
        for command in value if isinstance(value, list | tuple) else [value]:
            main.add_command(command)


_register()
