"""Visual backbones and their starting weights: `efficientnet_lite` (EfficientNet-Lite0 in
Keras 3), `torch_checkpoint` (a restricted reader of PyTorch checkpoints), `imagenet_weights`
(the ImageNet weights an installed package ships, converted and cached) and `pretrained`
(which weights a tower's backbone starts from: ImageNet, a file, or none).

Imports nothing else of `sicot.trainer`.
"""
