"""The network and its weights: the Keras Xception in PyTorch (``xception``), the weight files
and their layouts (``weights``, ``_formats``, ``_download``), class names (``labels``) and the
receptive fields of the architecture (``receptive``)."""
