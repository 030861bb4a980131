"""Facts from REFERENCE.md section 1, written out independently of xviz's own tables."""

# block -> (channels out, side at 299, side at 150)
REFERENCE_BLOCKS = {
    "block1": (64, 147, 72),
    "block2": (128, 74, 36),
    "block3": (256, 37, 18),
    "block4": (728, 19, 9),
    **{f"block{b}": (728, 19, 9) for b in range(5, 13)},
    "block13": (1024, 10, 5),
    "block14": (2048, 10, 5),
}

# The plain convolutions: block1's two, then the residual 1x1 convs of blocks 2, 3, 4, 13.
REFERENCE_CONVS = [
    "block1_conv1",
    "block1_conv2",
    "block2_residual",
    "block3_residual",
    "block4_residual",
    "block13_residual",
]
