"""Feature views: one per entity and window family, schemas built from the contract."""

from contract import FLOAT64, INT64, VIEWS
from data_sources import BATCH_SOURCES
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
        source=BATCH_SOURCES[spec.name],
        online=True,
        description=spec.description,
    )


user_daily = _view(VIEWS["user_daily"])
ad_daily = _view(VIEWS["ad_daily"])
advertiser_daily = _view(VIEWS["advertiser_daily"])
campaign_daily = _view(VIEWS["campaign_daily"])
user_category_daily = _view(VIEWS["user_category_daily"])
ad_profile = _view(VIEWS["ad_profile"])
user_profile = _view(VIEWS["user_profile"])
