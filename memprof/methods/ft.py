"""Full fine-tuning: every parameter trainable."""

from memprof.methods.registry import register


@register("ft", "full fine-tuning: every parameter trainable", trains="every parameter", layers_alike=True)
def apply(model, backbone, task):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
