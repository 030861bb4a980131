"""The web app's parts, one module per tab: each lays out its components and wires its events.

``shared`` holds what all tabs use (image, analysis, prediction, layer pickers, network map)
and how a new analysis reaches the tabs; ``api`` the endpoints no control triggers; ``page``
composes them.
"""
