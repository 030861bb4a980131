"""xviz web app: ``python app.py`` serves it (what a Hugging Face Space runs; ``xviz serve``
does the same from an installed package). The page is composed in ``xviz/app/ui/page.py``.

``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are honoured.
"""

import os

if os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true"):
    # On ZeroGPU (xviz/engine/zerogpu.py) the `spaces` package patches torch's CUDA: it must be
    # imported before torch is ("CUDA has been initialized before importing `spaces`").
    import spaces  # noqa: F401

from xviz.app.ui.page import build_demo, main

__all__ = ["build_demo", "main"]

if __name__ == "__main__":
    main()
