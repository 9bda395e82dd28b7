"""How requests reach experts. Training code talks to `ExpertTransport` and never asks which engine."""
