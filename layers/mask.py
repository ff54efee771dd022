"""`Mask`, what a mask type's `apply` and `grad` receive: `bittensor_core.packed_mask.Mask`, named
here for the mask-type plug-in interface (`layers.mask_type`)."""

from bittensor_core.packed_mask import Mask

__all__ = ["Mask"]
