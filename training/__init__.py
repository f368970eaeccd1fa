"""The GPU training program of mlplatform (runs in the training container, or under the local launcher)."""
