"""Pictures and figures from computed numbers, no model: channel grids and colourbars
(``maps``, ``colormaps``), their HTML (``html``), Plotly figures of costs, traces and
attributions, the network map (``network_map``) and contact sheets of visualizations."""
