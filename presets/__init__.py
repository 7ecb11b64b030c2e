"""Preset YAML files, one per hardware class; installed as the ``autoseg.presets`` package."""
