"""The Flower App: the two components `[tool.flwr.app.components]` in pyproject.toml names.

`flwr run` (a Deployment) loads these objects; what they do is built in `engines.flower_app`.
Importing this module stays light (no torch, transformers or trl): Flower may load it in every
ClientApp process.
"""

from fedgrpo.engines.flower_app import make_client_app, make_server_app

server_app = make_server_app()
client_app = make_client_app()
