"""Peers: other libraries' pruning, run the way maskfx's demo and benchmarks compare against it.

``maskfx.peers.torch_pruning``: Torch-Pruning's L2-magnitude channel pruning to a MACs target.
"""
