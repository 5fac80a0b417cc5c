"""Entities: the join keys every view and request uses (ids are int64, see contract)."""

from contract import ENTITIES, INT64
from feast import Entity, ValueType

_VALUE_TYPES = {INT64: ValueType.INT64}


def _entity(spec) -> Entity:
    return Entity(
        name=spec.name,
        join_keys=[spec.join_key],
        value_type=_VALUE_TYPES.get(spec.dtype, ValueType.STRING),
        description=spec.description,
    )


# One module-level entity per contract entity (Feast discovers them among a module's
# names), the declared context keys of group_bys.yaml included.
ENTITY_BY_NAME = {spec.name: _entity(spec) for spec in ENTITIES}
globals().update(ENTITY_BY_NAME)
