"""The fused dropout kernels: `triton_dropout` (Triton, imported only when used) and its parameters.

Dropout arithmetic lives with the layers; the bool-storage core (`bittensor_core.kernels`) keeps
only pack / unpack / popcount and the Triton tiling helpers these kernels share.
"""
