"""A third-party method as another package would ship it: linear probing (only the task head
trains), registered through the ``memprof.methods`` entry-point group (its dist-info is written by
tests/memprof/test_cli_listings.py, as pip would write it on install)."""

from memprof.methods import register
from memprof.methods.registry import freeze, unfreeze_head


@register(
    "linear-probe", "linear probing: the pre-trained model frozen, only the task head trains", trains="the task head"
)
def apply(model, backbone, task):
    freeze(model)
    unfreeze_head(model)
    return model
