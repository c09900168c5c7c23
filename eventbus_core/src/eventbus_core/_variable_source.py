"""`VariableEnvSource`: the environment as eventbus's settings read it, each field by its
variable alone.

A settings model with `populate_by_name=True` (so that `EventBusSettings(buffer_size=7)` works
in Python) has pydantic-settings read each field from the environment by its field name too, in
any case: `BUFFER_SIZE` set the buffer, `REDIS_KEY` the Redis log's key, and `NATS_STREAM` or
`NATS_GROUP`, which other NATS software may use, moved where eventbus wrote and which group it
read, without a word; errors then named `EVENTBUS_NATS_STREAM`, which nobody had set (trial
125). Only the variable (the field's `validation_alias`) is read here, in any case, as before.
"""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

__all__ = ["ReadsVariablesOnly", "VariableEnvSource", "variable_sources"]


class VariableEnvSource(EnvSettingsSource):
    """The environment, read by each field's variable only (not by its field name)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value, key, complex_ = super().get_field_value(field, field_name)
        alias = field.validation_alias
        if (
            value is not None
            and isinstance(alias, str)
            and key == field_name
            and alias.lower() != field_name.lower()
        ):
            return None, field_name, complex_  # found by the field's name: not its variable
        return value, key, complex_


def variable_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    dotenv_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of a settings model whose fields each have a variable: keywords first, then
    the environment by variable (`VariableEnvSource`), then pydantic-settings' others.

    For a model's `settings_customise_sources` (`ReadsVariablesOnly` is one).
    """
    return init_settings, VariableEnvSource(settings_cls), dotenv_settings, file_secret_settings


class ReadsVariablesOnly:
    """A mixin for a pydantic-settings model whose fields each have a variable: each is read
    from its variable only, not from its field name. Put it first:
    `class MySettings(ReadsVariablesOnly, BaseSettings)`; `PluginSettings` has it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Each field from its variable only (`VariableEnvSource`)."""
        return variable_sources(settings_cls, init_settings, dotenv_settings, file_secret_settings)
