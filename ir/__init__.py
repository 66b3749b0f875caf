"""nnc intermediate representations.

The graph IR (ops on tensors) and the loop IR (loop nests on buffers).
"""
