"""Preset YAML files, one per family; installed as the package ``zoo.configs`` (see pyproject.toml)."""
