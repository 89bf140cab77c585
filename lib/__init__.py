"""The kit: text-to-image retrieval of traffic participants (CVPR 2023 FMC Track 2, A3R).

lib/README.md maps its packages.
"""
