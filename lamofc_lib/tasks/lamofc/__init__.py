"""LaMoFC's five tasks (Gao et al., "Feature coding in the era of large models"): cls (DINOv2, ImageNet), seg
(DINOv2, VOC2012), dpt (DINOv2, NYU-Depth-v2), csr (Llama3, ARC-Challenge) and tti (Stable Diffusion 3, COCO
captions); one module per task, with the model code they share."""
