"""Python front end of the CUDA ops: thin wrappers over torch.ops.flashkernel.* plus the fake
(meta) implementations torch.compile traces with. One module per op."""
