"""Feature services: one per model version, the only place a model's features are listed
(with the ``services`` of the group-bys declared in ``group_bys.yaml``, appended).

Training asks Feast for the service by name; serving reads the same ordered list from
the model manifest written at training time.
"""

import features
from contract import ALL_VIEWS, SERVICES_OF
from feast import FeatureService
from features import (
    ad_daily,
    ad_profile,
    advertiser_daily,
    campaign_daily,
    user_category_daily,
    user_daily,
    user_profile,
)


def _views_of(service: str) -> list:
    """The views of group_bys.yaml's group-bys that name ``service`` (default: both)."""
    return [
        getattr(features, name)
        for name, services in SERVICES_OF.items()
        if service in services and name in ALL_VIEWS
    ]


ctr_v1 = FeatureService(
    name="ctr_v1",
    features=[
        user_daily,
        ad_daily,
        advertiser_daily,
        user_category_daily,
        ad_profile,
        user_profile,
        *(_views_of("ctr_v1")),
    ],
    description="Click-through model v1: user, ad, advertiser and user-by-category history "
    "plus the ad catalog and user profile.",
)

cvr_v1 = FeatureService(
    name="cvr_v1",
    features=[
        user_daily,
        ad_daily,
        advertiser_daily,
        campaign_daily,
        ad_profile,
        user_profile,
        *(_views_of("cvr_v1")),
    ],
    description="Conversion model v1 (post-click and click-through-conversion): user, ad, "
    "advertiser and campaign history plus the ad catalog and user profile.",
)
