"""Tensors in, tensors out: terms, tableaux, solvers, controllers, the loop."""
