"""Config options the DINOv2 tasks (cls, seg, dpt) share, as JSON-schema properties of their model block."""

DINOV2_MODEL_OPTIONS = {
    "interpolation": {
        "description": (
            "How position embeddings are resized to inputs other than the pretraining size. reference (the default, "
            "as the DINOv2 release's ViT-g/14): bicubic in float32 with scale factors ((rows + 0.1) / M, (cols + "
            "0.1) / M) of the M x M grid; transformers: transformers' Dinov2Model resampling to the output size "
            "(rows, cols), a deviation that changes the cls (224 x 224) and dpt (490 x 644) features. Unset means "
            "reference."
        ),
        "enum": ["reference", "transformers", None],
    }
}
