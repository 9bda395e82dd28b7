"""Models: the tiny from-scratch preset, the content-addressed cache, generation and training."""
