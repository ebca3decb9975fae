"""LaMoFCBench's vision understanding scenarios (rows 1-5): DINOv3 ViT-7B/16 classification on ImageNet-1k,
ImageNet-A and ImageNet-R (classification.py), ADE20K segmentation and NYUv2 depth; the DINOv3 backbone they
share is in dinov3.py."""
