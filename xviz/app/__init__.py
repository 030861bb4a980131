"""The web app: what its events do without Gradio (``explorer``), the guided tour's claims
(``tour``), served files (``files``), the request gate and launch (``server``), and the page
itself (``ui``, one module per tab)."""
