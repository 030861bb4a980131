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
