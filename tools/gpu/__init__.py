"""The GPU proof: ViT-bigG-14 speed and memory, the CUDA pipeline, torchrun with NCCL
(`python -m tools.gpu`, make gpu-proof), and the wheels it carries to a GPU machine."""
