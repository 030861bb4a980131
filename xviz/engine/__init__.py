"""Running the model: input decoding (``preprocess``), hooks, the analysis of one image
(``analysis``) and its cache, the runner every computation goes through (``runner``; on
ZeroGPU ``zerogpu``), devices, warm-up, the BN-folded fast path (``inference``) and forward
passes that stop at a layer (``truncated``)."""
