"""nnc intermediate representations: the graph IR (ops on tensors) and the loop IR (loop nests on buffers)."""
