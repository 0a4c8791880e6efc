"""Lessons: hand-written loops that exist to be read (gradient descent by hand, with autograd, with an optimizer)."""
