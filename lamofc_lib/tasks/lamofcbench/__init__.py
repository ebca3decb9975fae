"""LaMoFCBench's scenarios ("Towards Large Model Feature Coding"), by category: vision (DINOv3 classification,
segmentation, depth), then language caches, controllable generation and audio; one module per scenario, with the
model code a category shares. Each is scored by putting the decoded tensors back into the model's forward pass
(lamofc_lib.reinjection)."""
