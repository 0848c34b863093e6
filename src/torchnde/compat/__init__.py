"""Drop-in compatibility modules for torchdiffeq, torchsde and torchcde users."""
