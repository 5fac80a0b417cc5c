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


user_daily = _view(ALL_VIEWS["user_daily"])
ad_daily = _view(ALL_VIEWS["ad_daily"])
advertiser_daily = _view(ALL_VIEWS["advertiser_daily"])
campaign_daily = _view(ALL_VIEWS["campaign_daily"])
user_category_daily = _view(ALL_VIEWS["user_category_daily"])
ad_profile = _view(ALL_VIEWS["ad_profile"])
user_profile = _view(ALL_VIEWS["user_profile"])
campaign_profile = _view(ALL_VIEWS["campaign_profile"])
user_stream = _view(ALL_VIEWS["user_stream"])
ad_stream = _view(ALL_VIEWS["ad_stream"])
campaign_stream = _view(ALL_VIEWS["campaign_stream"])
