"""Feature views: one per entity and window family, schemas built from the contract.

Batch views read the Spark job's tables. Stream views are fed by push sources: the
stream worker pushes their rows online and appends them to the push source's log, which
is what the offline store joins.
"""

from contract import ALL_VIEWS, FLOAT64, INT64, push_source_name
from data_sources import BATCH_SOURCES, PUSH
from entities import ENTITY_BY_NAME
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

_TYPES = {INT64: Int64, FLOAT64: Float64}


def _view(spec) -> FeatureView:
    return FeatureView(
        name=spec.name,
        entities=[ENTITY_BY_NAME[e.name] for e in spec.entities],
        ttl=spec.ttl,
        schema=[Field(name=f.name, dtype=_TYPES.get(f.dtype, String)) for f in spec.features],
        source=PUSH.get(push_source_name(spec.name)) or BATCH_SOURCES[spec.name],
        online=True,
        description=spec.description,
    )


# One module-level view per declared view (Feast discovers views among a module's
# names): the group-bys of contract.GROUP_BYS, the profiles and the streamed views. A
# group-by declared in the contract gets its view here without another line.
for _spec in ALL_VIEWS.values():
    globals()[_spec.name] = _view(_spec)
