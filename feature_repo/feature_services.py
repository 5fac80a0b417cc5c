"""Feature services: one per model version, the only place a model's features are listed.

Training asks Feast for the service by name; serving reads the same ordered list from
the model manifest written at training time.
"""

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

ctr_v1 = FeatureService(
    name="ctr_v1",
    features=[
        user_daily,
        ad_daily,
        advertiser_daily,
        user_category_daily,
        ad_profile,
        user_profile,
    ],
    description="Click-through model v1: user, ad, advertiser and user-by-category history "
    "plus the ad catalog and user profile.",
)

cvr_v1 = FeatureService(
    name="cvr_v1",
    features=[user_daily, ad_daily, advertiser_daily, campaign_daily, ad_profile, user_profile],
    description="Conversion model v1 (post-click and click-through-conversion): user, ad, "
    "advertiser and campaign history plus the ad catalog and user profile.",
)
